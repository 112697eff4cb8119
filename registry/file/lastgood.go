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

// lastGood reads a config directory again and again and keeps what each
// file last parsed to: a file that does not read or parse, or that was
// emptied, keeps its last good parse until it parses again or is
// removed, so that one file being written never withdraws what the
// others say, nor what it said itself. Dir and ImportDir are its two
// readings of the directory. It is used by one goroutine.
type lastGood[T any] struct {
	path  string
	parse func(path string, data []byte) (T, error)
	// names reports whether a parse says something an emptied file keeps.
	names func(T) bool
	// parsesAgain and failed log a file's recovery, and each new problem
	// of a file with what it last parsed to (the zero T if nothing).
	parsesAgain func(path string, v T)
	failed      func(path string, last T, err error)
	files       map[string]*lastGoodFile[T] // by path
}

// lastGoodFile is what a lastGood knows of one file.
type lastGoodFile[T any] struct {
	data    []byte // the content last read; nil after a failed read
	good    T      // the parse of the last content that parsed
	problem error  // why the content last read is not in force; nil if it is
}

// read reads the directory with ReadDir and parses what changed. A file
// removed, even between the listing and its reading, is gone with its
// parse. It fails only if the directory does not list; then nothing
// changes.
func (g *lastGood[T]) read() error {
	if g.files == nil {
		g.files = make(map[string]*lastGoodFile[T])
	}
	files, unreadable, err := readDir(g.path)
	if err != nil {
		return err
	}
	present := make(map[string]bool, len(files)+len(unreadable))
	for _, f := range files {
		present[f.Path] = true
		g.update(f.Path, f.Data)
	}
	for _, fe := range unreadable {
		present[fe.File] = true
		tf := g.tracked(fe.File)
		tf.data = nil // read it again, and parse it, once it reads
		g.fail(fe.File, tf, fe)
	}
	for p := range g.files {
		if !present[p] {
			delete(g.files, p)
		}
	}
	return nil
}

// inForce returns each file's parse in force, in file order.
func (g *lastGood[T]) inForce() []T {
	out := make([]T, 0, len(g.files))
	for _, p := range slices.Sorted(maps.Keys(g.files)) {
		out = append(out, g.files[p].good)
	}
	return out
}

// problems joins the problem of every file whose content last read is
// not in force, each a *FileError, leaving out files only emptied for a
// moment unless emptied; nil when there are none.
func (g *lastGood[T]) problems(emptied bool) error {
	var errs []error
	for _, p := range slices.Sorted(maps.Keys(g.files)) {
		if pr := g.files[p].problem; pr != nil && (emptied || !errors.Is(pr, errEmptied)) {
			errs = append(errs, pr)
		}
	}
	return errors.Join(errs...)
}

func (g *lastGood[T]) tracked(path string) *lastGoodFile[T] {
	tf := g.files[path]
	if tf == nil {
		tf = &lastGoodFile[T]{}
		g.files[path] = tf
	}
	return tf
}

// update parses a file's content, unless it is what was parsed last time.
func (g *lastGood[T]) update(path string, data []byte) {
	tf := g.tracked(path)
	if tf.data != nil && bytes.Equal(tf.data, data) {
		return
	}
	tf.data = data
	v, err := g.parse(path, data)
	if err == nil && !g.names(v) && g.names(tf.good) && len(bytes.TrimSpace(data)) == 0 {
		err = &FileError{File: path, Err: errEmptied}
	}
	if err != nil {
		g.fail(path, tf, err)
		return
	}
	if tf.problem != nil {
		g.parsesAgain(path, v)
	}
	tf.good, tf.problem = v, nil
}

// fail records why a file's content is not in force, and logs it unless
// it is what was logged last for this file.
func (g *lastGood[T]) fail(path string, tf *lastGoodFile[T], err error) {
	if tf.problem != nil && tf.problem.Error() == err.Error() {
		return
	}
	tf.problem = err
	g.failed(path, tf.good, err)
}

// Dir reads a config directory again and again, as the file source polls
// it, and keeps each file's last good documents (lastGood). Each problem
// is logged once per file, with the file and the reason, until the file
// parses again. A Dir is used by one goroutine.
type Dir struct{ files lastGood[[]*Document] }

// NewDir returns a Dir for the directory path, logging to log. It does
// no I/O.
func NewDir(path string, log *slog.Logger) *Dir {
	if log == nil {
		log = slog.Default()
	}
	return &Dir{files: lastGood[[]*Document]{
		path:  path,
		parse: Parse,
		names: func(docs []*Document) bool { return len(docs) > 0 },
		parsesAgain: func(path string, docs []*Document) {
			log.Info("file registry: service file parses again", "file", path, "documents", len(docs))
		},
		failed: func(path string, last []*Document, err error) {
			attrs := []any{"file", path, "error", err}
			if fe, ok := errors.AsType[*FileError](err); ok && fe.Document > 0 {
				attrs = append(attrs, "document", fe.Document, "line", fe.Line)
			}
			if last != nil {
				log.Warn("file registry: service file does not parse; its last good documents stay in force until it does or is removed", attrs...)
				return
			}
			log.Warn("file registry: service file does not parse; it is ignored until it does", attrs...)
		},
	}}
}

// Parse reads the directory with ReadDir and returns the documents in
// force, in file order: each file's own if it parses, else its last good
// ones. A file removed, even between the listing and its reading, is
// gone with its documents. Parse fails only if the directory does not
// list; then nothing changes.
func (d *Dir) Parse() ([]*Document, error) {
	if err := d.files.read(); err != nil {
		return nil, err
	}
	var docs []*Document
	for _, fd := range d.files.inForce() {
		docs = append(docs, fd...)
	}
	return docs, nil
}

// Problems joins the problem of every file whose content last read is not
// in force, each a *FileError; nil when every file parsed.
func (d *Dir) Problems() error { return d.files.problems(true) }

// Broken is Problems without the files that are only empty for a moment,
// as a file rewritten in place is: their last good documents are in force
// and nothing needs to be said.
func (d *Dir) Broken() error { return d.files.problems(false) }
