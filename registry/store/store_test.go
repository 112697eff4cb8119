package store_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/registry/store"
	bolt "go.etcd.io/bbolt"
)

func deadlineContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// valueOf is the value the tests store under key, so that a value read
// back can be checked against its key.
func valueOf(key string, size int) []byte {
	sum := sha256.Sum256([]byte(key))
	return bytes.Repeat(sum[:], size/len(sum)+1)[:size]
}

// filledStore writes n records into a new store at path and closes it.
func filledStore(t *testing.T, path string, n int) {
	t.Helper()
	ctx := deadlineContext(t, 30*time.Second)
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		key := store.RecordKey("east", fmt.Sprintf("svc-%04d", i))
		if err := s.Write(ctx, store.Op{Bucket: store.BucketRecords, Key: key, Value: valueOf(key, 700)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkerGoroutines counts goroutines running bbolt's consistency check.
func checkerGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "go.etcd.io/bbolt.(*Tx).check(")
}

func wantDamaged(t *testing.T, path string) {
	t.Helper()
	s, err := store.Open(path)
	if err == nil {
		s.Close()
		t.Fatalf("Open of a damaged file succeeded")
	}
	t.Logf("Open: %v", err)
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Open: %q, want the path %s and that it is damaged", err, path)
	}
	// Nothing is left running against the file that could not be opened.
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for checkerGoroutines() > 0 {
		select {
		case <-deadline.C:
			t.Fatal("a bbolt checker goroutine outlived the failed Open")
		case <-tick.C:
		}
	}
}

// usedBytes is how much of a bbolt file its pages use; the file itself is
// often longer, since bbolt grows it ahead of use.
func usedBytes(t *testing.T, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var size int64
	err = db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return size
}

func TestOpenDamagedFile(t *testing.T) {
	dir := t.TempDir()
	template := filepath.Join(dir, "template.db")
	filledStore(t, template, 200)
	good, err := os.ReadFile(template)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"cut to 100 bytes", good[:100]},
		{"cut to the meta pages", good[:2*os.Getpagesize()]},
		{"cut in a page", good[:3*os.Getpagesize()+123]},
		{"cut in half", good[:len(good)/2]},
		{"last used page missing", good[:usedBytes(t, template)-int64(os.Getpagesize())]},
		{"random bytes", func() []byte {
			b := make([]byte, len(good))
			rand.Read(b)
			return b
		}()},
		{"a few random bytes", func() []byte {
			b := make([]byte, 100)
			rand.Read(b)
			return b
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "damaged.db")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			wantDamaged(t, path)
		})
	}
}

// TestOpenInconsistentFile damages bbolt's structure, not its length: the
// freelist forgets its pages, so the check finds many unreachable pages.
func TestOpenInconsistentFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inconsistent.db")
	filledStore(t, path, 200)
	// Free some pages, and find the freelist page.
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := deadlineContext(t, 30*time.Second)
	for i := range 100 {
		if err := s.Write(ctx, store.Op{Bucket: store.BucketRecords, Key: store.RecordKey("east", fmt.Sprintf("svc-%04d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var freelist, free int
	err = db.View(func(tx *bolt.Tx) error {
		for id := range int(tx.Size()) / db.Info().PageSize {
			p, err := tx.Page(id)
			if err != nil {
				return err
			}
			switch p.Type {
			case "freelist":
				freelist = id
			case "free":
				free++
			}
		}
		return nil
	})
	pageSize := db.Info().PageSize
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if freelist == 0 || free < 2 {
		t.Fatalf("want a freelist page and at least two free pages, have freelist page %d and %d free", freelist, free)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The page header is id (8 bytes), flags (2), count (2), overflow (4):
	// a count of zero frees nothing.
	if _, err := f.WriteAt([]byte{0, 0}, int64(freelist*pageSize+10)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	wantDamaged(t, path)
}

func TestOpenLockedStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locked.db")
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	second, err := store.Open(path)
	if err == nil {
		second.Close()
		s.Close()
		t.Fatal("a second Open of a live store succeeded")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the second Open gave up after %s", took)
	}
	if !strings.Contains(err.Error(), "locked") || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open: %q, want the path and that it is locked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Once the first is closed, the file opens again.
	again, err := store.Open(path)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	again.Close()
}

func TestWriteAfterClose(t *testing.T) {
	s, err := store.Open(filepath.Join(t.TempDir(), "closed.db"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := deadlineContext(t, 10*time.Second)
	if err := s.Write(ctx, store.Op{Bucket: store.BucketMeta, Key: "k", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Write(ctx, store.Op{Bucket: store.BucketMeta, Key: "k", Value: []byte("w")}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Write after Close: %v, want %v", err, store.ErrClosed)
	}
}

// The child side of TestStoreSurvivesKill writes until it is killed.
const killChildEnv = "FEDERATE_STORE_KILL_CHILD"

const killWriters = 4

// writeUntilKilled writes from several goroutines and prints every key
// whose write was acknowledged.
func writeUntilKilled(t *testing.T, path string) {
	s, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := deadlineContext(t, time.Minute)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range killWriters {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("w%d-%06d", w, i)
				if err := s.Write(ctx, store.Op{Bucket: store.BucketRecords, Key: key, Value: valueOf(key, 1500)}); err != nil {
					return
				}
				mu.Lock()
				os.Stdout.WriteString("acked " + key + "\n")
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func TestStoreSurvivesKill(t *testing.T) {
	if path := os.Getenv(killChildEnv); path != "" {
		writeUntilKilled(t, path)
		return
	}
	path := filepath.Join(t.TempDir(), "killed.db")
	ctx := deadlineContext(t, 30*time.Second)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestStoreSurvivesKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), killChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []string
	killed := false
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		key, ok := strings.CutPrefix(lines.Text(), "acked ")
		if !ok {
			continue
		}
		acked = append(acked, key)
		if len(acked) == 1000 && !killed {
			// Mid-write: the writers keep going until the signal lands.
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("the writer stopped after %d acknowledged writes (%v):\n%s", len(acked), err, stderr.String())
	}
	if ctx.Err() != nil {
		t.Fatal("the writer did not die in time")
	}
	t.Logf("writer killed (%v) after %d acknowledged writes", err, len(acked))

	s, err := store.Open(path)
	if err != nil {
		t.Fatalf("Open after kill -9: %v", err)
	}
	defer s.Close()
	for _, key := range acked {
		v, err := s.Get(store.BucketRecords, key)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(v, valueOf(key, 1500)) {
			t.Fatalf("acknowledged write of %s is lost or damaged after kill -9 (%d bytes)", key, len(v))
		}
	}
	// And the store takes new writes.
	if err := s.Write(ctx, store.Op{Bucket: store.BucketMeta, Key: "after", Value: []byte("kill")}); err != nil {
		t.Fatalf("Write after recovery: %v", err)
	}
}
