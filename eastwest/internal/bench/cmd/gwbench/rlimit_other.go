//go:build !unix

package main

import "errors"

// limitOpenFiles is for Unix systems only.
func limitOpenFiles(int) error {
	return errors.New("limiting open files needs a Unix system")
}
