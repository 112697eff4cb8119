package file

import "fmt"

// FileError is a problem in one file. Document and Line locate the document
// when the problem is inside one, and are zero when it is not.
type FileError struct {
	// File is the file's name as given to Parse; Load gives the full path.
	File string
	// Document counts the file's non-empty documents from 1.
	Document int
	// Item counts the items of a List document from 1; 0 outside a list.
	Item int
	// Line is the line on which the document starts.
	Line int
	Err  error
}

func (e *FileError) Error() string {
	if e.Document == 0 && e.Line > 0 {
		return fmt.Sprintf("file: %s: line %d: %v", e.File, e.Line, e.Err)
	}
	if e.Document == 0 {
		return fmt.Sprintf("file: %s: %v", e.File, e.Err)
	}
	if e.Item > 0 {
		return fmt.Sprintf("file: %s: document %d item %d (line %d): %v", e.File, e.Document, e.Item, e.Line, e.Err)
	}
	return fmt.Sprintf("file: %s: document %d (line %d): %v", e.File, e.Document, e.Line, e.Err)
}

func (e *FileError) Unwrap() error { return e.Err }
