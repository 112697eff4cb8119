package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/registry/store"
)

// A store file removed or replaced while the store is open takes no more
// writes: they would go to a file that no one opens again, and be lost at
// the next start. The error names the file and says how to put it back;
// on Linux, the copy it names holds every write acknowledged before.
func TestWriteToRemovedFileFails(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(path string) error
	}{
		{"removed", os.Remove},
		{"replaced", func(path string) error {
			other := path + ".new"
			if err := os.WriteFile(other, nil, 0o600); err != nil {
				return err
			}
			return os.Rename(other, path)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store.db")
			s, err := store.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx := deadlineContext(t, 10*time.Second)
			kept := store.Op{Bucket: store.BucketMeta, Key: "kept", Value: []byte("v")}
			if err := s.Write(ctx, kept); err != nil {
				t.Fatal(err)
			}
			if err := tc.fault(path); err != nil {
				t.Fatal(err)
			}
			err = s.Write(ctx, store.Op{Bucket: store.BucketMeta, Key: "lost", Value: []byte("v")})
			if err == nil {
				t.Fatalf("a write to the store whose file was %s succeeded", tc.name)
			}
			if !errors.Is(err, store.ErrFileGone) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Write: %q, want %v naming %s", err, store.ErrFileGone, path)
			}
			if v, err := s.Get(store.BucketMeta, "kept"); err != nil || string(v) != "v" {
				t.Errorf("Get after the fault: %q, %v; want what was written before", v, err)
			}
			if runtime.GOOS != "linux" {
				return
			}
			// The copy the error names is the open file: put it back.
			m := regexp.MustCompile(`/proc/\d+/fd/\d+`).FindString(err.Error())
			if m == "" {
				t.Fatalf("Write: %q names no copy of the open file", err)
			}
			data, err := os.ReadFile(m)
			if err != nil {
				t.Fatal(err)
			}
			back := filepath.Join(t.TempDir(), "back.db")
			if err := os.WriteFile(back, data, 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := store.Open(back)
			if err != nil {
				t.Fatalf("the copy does not open: %v", err)
			}
			defer r.Close()
			if v, err := r.Get(store.BucketMeta, "kept"); err != nil || string(v) != "v" {
				t.Errorf("the copy holds %q, %v; want the acknowledged write", v, err)
			}
		})
	}
}
