package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/registry/store"
)

// A store file truncated while the store is open takes no more writes,
// with an error that says so, instead of the process dying of a fault
// (SIGBUS) when bbolt reads the pages that are gone.
func TestWriteToTruncatedFileFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	filledStore(t, path, 200)
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := os.Truncate(path, int64(2*os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
	ctx := deadlineContext(t, 10*time.Second)
	key := store.RecordKey("east", "svc-0001")
	err = s.Write(ctx, store.Op{Bucket: store.BucketRecords, Key: key, Value: valueOf(key, 900)})
	if !errors.Is(err, store.ErrFileTruncated) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "backup") {
		t.Fatalf("Write to a truncated store: %v, want %v naming %s and a backup", err, store.ErrFileTruncated, path)
	}
}
