package file

import (
	"bytes"
	"errors"
	"log/slog"
	"maps"
	"slices"
)

// errEmptied is the problem of a file that had documents and is now empty:
// a file rewritten in place (truncated, then written) is empty for a
// moment, and its services must not be withdrawn meanwhile.
var errEmptied = errors.New("the file is empty, as a file being rewritten in place is for a moment; " +
	"its last good documents stay in force: remove the file to withdraw them, and write files by atomic rename")

// Dir reads a config directory again and again, as the file source polls
// it, and keeps each file's last good documents: a file that does not read
// or parse, or that was emptied, keeps the documents it last parsed to
// until it parses again or is removed, so that one file being written
// never withdraws the others' services, nor its own. Each problem is
// logged once per file, with the file and the reason, until the file
// parses again. A Dir is used by one goroutine.
type Dir struct {
	path  string
	log   *slog.Logger
	files map[string]*trackedFile // by path
}

// trackedFile is what a Dir knows of one file.
type trackedFile struct {
	data    []byte      // the content last read; nil after a failed read
	docs    []*Document // the documents of the last content that parsed
	problem error       // why the content last read is not in force; nil if it is
}

// NewDir returns a Dir for the directory path, logging to log. It does
// no I/O.
func NewDir(path string, log *slog.Logger) *Dir {
	if log == nil {
		log = slog.Default()
	}
	return &Dir{path: path, log: log, files: make(map[string]*trackedFile)}
}

// Parse reads the directory with ReadDir and returns the documents in
// force, in file order: each file's own if it parses, else its last good
// ones. A file removed, even between the listing and its reading, is
// gone with its documents. Parse fails only if the directory does not
// list; then nothing changes.
func (d *Dir) Parse() ([]*Document, error) {
	files, unreadable, err := readDir(d.path)
	if err != nil {
		return nil, err
	}
	present := make(map[string]bool, len(files)+len(unreadable))
	for _, f := range files {
		present[f.Path] = true
		d.update(f.Path, f.Data)
	}
	for _, fe := range unreadable {
		present[fe.File] = true
		tf := d.tracked(fe.File)
		tf.data = nil // read it again, and parse it, once it reads
		d.fail(fe.File, tf, fe)
	}
	for p := range d.files {
		if !present[p] {
			delete(d.files, p)
		}
	}
	var docs []*Document
	for _, p := range slices.Sorted(maps.Keys(d.files)) {
		docs = append(docs, d.files[p].docs...)
	}
	return docs, nil
}

// Problems joins the problem of every file whose content last read is not
// in force, each a *FileError; nil when every file parsed.
func (d *Dir) Problems() error {
	var errs []error
	for _, p := range slices.Sorted(maps.Keys(d.files)) {
		errs = append(errs, d.files[p].problem)
	}
	return errors.Join(errs...)
}

// Broken is Problems without the files that are only empty for a moment,
// as a file rewritten in place is: their last good documents are in force
// and nothing needs to be said.
func (d *Dir) Broken() error {
	var errs []error
	for _, p := range slices.Sorted(maps.Keys(d.files)) {
		if pr := d.files[p].problem; pr != nil && !errors.Is(pr, errEmptied) {
			errs = append(errs, pr)
		}
	}
	return errors.Join(errs...)
}

func (d *Dir) tracked(path string) *trackedFile {
	tf := d.files[path]
	if tf == nil {
		tf = &trackedFile{}
		d.files[path] = tf
	}
	return tf
}

// update parses a file's content, unless it is what was parsed last time.
func (d *Dir) update(path string, data []byte) {
	tf := d.tracked(path)
	if tf.data != nil && bytes.Equal(tf.data, data) {
		return
	}
	tf.data = data
	docs, err := Parse(path, data)
	if err == nil && len(docs) == 0 && len(tf.docs) > 0 && len(bytes.TrimSpace(data)) == 0 {
		err = &FileError{File: path, Err: errEmptied}
	}
	if err != nil {
		d.fail(path, tf, err)
		return
	}
	if tf.problem != nil {
		d.log.Info("file registry: service file parses again", "file", path, "documents", len(docs))
	}
	tf.docs, tf.problem = docs, nil
}

// fail records why a file's content is not in force, and logs it unless
// it is what was logged last for this file.
func (d *Dir) fail(path string, tf *trackedFile, err error) {
	if tf.problem != nil && tf.problem.Error() == err.Error() {
		return
	}
	tf.problem = err
	attrs := []any{"file", path, "error", err}
	if fe, ok := errors.AsType[*FileError](err); ok && fe.Document > 0 {
		attrs = append(attrs, "document", fe.Document, "line", fe.Line)
	}
	if tf.docs != nil {
		d.log.Warn("file registry: service file does not parse; its last good documents stay in force until it does or is removed", attrs...)
		return
	}
	d.log.Warn("file registry: service file does not parse; it is ignored until it does", attrs...)
}
