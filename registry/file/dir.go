package file

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// YAMLFile is one YAML file of a config directory.
type YAMLFile struct {
	// Path is the directory joined with the file's name.
	Path string
	Data []byte
}

// ReadDir lists and reads the YAML files of a config directory. It is the
// one reading of that directory: the file source, the control plane's
// DestinationRules and its VM workload selectors all see the same files.
//
// It takes the names ending in .yaml or .yml (in any case), skips names
// starting with "." and anything but regular files (symbolic links are
// followed), and returns the files in name order. A file that is removed
// between the listing and its reading is simply gone. A file that cannot be
// read is left out and reported as a *FileError naming its path; the error
// joins every such report and comes with the files that did read. A
// directory that cannot be listed yields its error and no files.
func ReadDir(dir string) ([]YAMLFile, error) {
	files, unreadable, err := readDir(dir)
	if err != nil {
		return nil, err
	}
	errs := make([]error, len(unreadable))
	for i, fe := range unreadable {
		errs[i] = fe
	}
	return files, errors.Join(errs...)
}

// readDir is ReadDir with the files that do not read apart from the error
// of a directory that does not list.
func readDir(dir string) (files []YAMLFile, unreadable []*FileError, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("file: read config directory: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		ext := strings.ToLower(filepath.Ext(name))
		if strings.HasPrefix(name, ".") || ext != ".yaml" && ext != ".yml" {
			continue
		}
		p := filepath.Join(dir, name)
		info, err := os.Stat(p)
		if err == nil && !info.Mode().IsRegular() {
			continue
		}
		var data []byte
		if err == nil {
			data, err = os.ReadFile(p)
		}
		if err != nil {
			if vanished(p, err) {
				continue
			}
			unreadable = append(unreadable, &FileError{File: p, Err: pathCause(err)})
			continue
		}
		files = append(files, YAMLFile{Path: p, Data: data})
	}
	return files, unreadable, nil
}

// vanished reports whether a file that failed to read with err is gone:
// removed since the directory was listed, as under churn. A symbolic link
// whose target is missing is still there, and broken.
func vanished(path string, err error) bool {
	if !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	_, lerr := os.Lstat(path)
	return errors.Is(lerr, fs.ErrNotExist)
}

// ParseDir reads dir with ReadDir and parses every file with Parse. It
// returns the documents of the files that parse, in file order, and an
// error joining the problems of the others (each a *FileError), so that a
// caller sees every broken file at once.
func ParseDir(dir string) ([]*Document, error) {
	files, err := ReadDir(dir)
	errs := []error{err}
	var docs []*Document
	for _, f := range files {
		ds, err := Parse(f.Path, f.Data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		docs = append(docs, ds...)
	}
	return docs, errors.Join(errs...)
}

// pathCause drops the path from a *fs.PathError, which FileError already
// names.
func pathCause(err error) error {
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}
