// Package store is the bbolt file in which the hub and control planes keep
// records, tokens and their own identity across restarts.
package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("store: closed")

// ErrFileGone is returned by writes once the store's file was removed or
// replaced while the store is open: they would go to a file that no one
// opens again.
var ErrFileGone = errors.New("store: the store's file was removed or replaced while in use")

// ErrFileTruncated is returned by writes once the store's file was cut
// shorter while the store is open: bbolt would fault (SIGBUS) reading the
// pages that are gone.
var ErrFileTruncated = errors.New("store: the store's file was truncated while in use")

// Store buckets.
const (
	BucketRecords = "records" // <cluster>\x00<key> -> SignedRecord
	BucketMeta    = "meta"    // small named values: incarnation, CA, keys
	BucketTokens  = "tokens"  // join tokens by id
	// BucketWorkloads keeps a control plane's auto-registered
	// WorkloadEntries by <namespace>/<name> (JSON).
	BucketWorkloads = "workloads"
)

// MetaRemovedPrefix keys, in BucketMeta, when each removed cluster's
// credentials stopped counting (8 bytes, big-endian unix nanoseconds).
const MetaRemovedPrefix = "removed/"

// DefaultTimeout bounds the wait for another process's file lock.
const DefaultTimeout = 2 * time.Second

// Op is one write: a put, or a delete when Value is nil. With Prefix set,
// every key starting with Key is deleted.
type Op struct {
	Bucket string
	Key    string
	Value  []byte
	Prefix bool
}

// RecordKey is the records-bucket key of one record.
func RecordKey(cluster, key string) string { return cluster + "\x00" + key }

// Store is a bbolt file written by one goroutine: concurrent writes are
// batched into one transaction, and every write returns once it is on disk.
type Store struct {
	path   string
	opened os.FileInfo // the file as opened, to notice it removed or replaced
	size   int64       // the file's size after the last write; the writer's own
	db     *bolt.DB
	writes chan *writeReq

	closeOnce sync.Once
	done      chan struct{} // closed by Close
	stopped   chan struct{} // closed when the writer has exited
}

type writeReq struct {
	ops []Op
	err chan error
}

// Open opens or creates the store at path. A damaged file is reported
// with its path, never a panic.
func Open(path string) (s *Store, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = damaged(path, fmt.Errorf("%v", r))
		}
	}()
	if err := checkLength(path); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: DefaultTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, openError(path, err)
	}
	if err := check(db); err != nil {
		db.Close()
		return nil, damaged(path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{BucketRecords, BucketMeta, BucketTokens, BucketWorkloads} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: store %s: %w", path, err)
	}
	opened, err := os.Stat(path)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: store %s: %w", path, err)
	}
	s = &Store{path: path, opened: opened, size: opened.Size(), db: db, writes: make(chan *writeReq, 256), done: make(chan struct{}), stopped: make(chan struct{})}
	go s.writer()
	return s, nil
}

func openError(path string, err error) error {
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("store: store %s is locked by another process; stop it first", path)
	}
	if errors.Is(err, fs.ErrPermission) {
		who := fmt.Sprintf("uid %d", os.Geteuid())
		if u, uerr := user.Current(); uerr == nil {
			who = "user " + u.Username
		}
		return fmt.Errorf("store: store %s: %w: this process runs as %s, which may not read and write it; "+
			"give that user the file and its directory (chown), or run as the user that owns them. "+
			"The file is not damaged: do not move it aside", path, err, who)
	}
	return damaged(path, err)
}

// checkLength reports a file shorter than the pages its meta page counts.
// It runs before the file is opened for writing, which reads the freelist:
// pages past the end of a truncated file are mapped but unbacked, and
// reading them faults (SIGBUS), which no recover catches. A read-only open
// reads only the meta pages.
func checkLength(path string) error {
	info, err := os.Stat(path)
	if err != nil || info.Size() == 0 {
		return nil // a new file; bolt.Open reports other errors
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: DefaultTimeout, ReadOnly: true})
	if err != nil {
		return openError(path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		if need := tx.Size(); info.Size() < need {
			return damaged(path, fmt.Errorf("the file is %d bytes but its pages need %d: it was truncated", info.Size(), need))
		}
		return nil
	})
}

// DamagedError is a store file that does not read as a sound bbolt file.
// Its message gives a control plane's remedy; the hub, whose store holds
// the mesh CA, gives its own from Path and Cause.
type DamagedError struct {
	Path  string
	Cause error
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("store: store %s is damaged (%v); move it aside and restart: remote state is resynced from the federation", e.Path, e.Cause)
}

func (e *DamagedError) Unwrap() error { return e.Cause }

func damaged(path string, err error) error {
	return &DamagedError{Path: path, Cause: err}
}

func check(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		// Read to the end: the checker goroutine blocks until its
		// channel is drained.
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = err
			}
		}
		return first
	})
}

// Path returns the store's file name.
func (s *Store) Path() string { return s.path }

// Write applies ops in one transaction and returns once they are durable.
func (s *Store) Write(ctx context.Context, ops ...Op) error {
	req := &writeReq{ops: ops, err: make(chan error, 1)}
	select {
	case s.writes <- req:
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.err:
		return err
	case <-s.stopped:
		select {
		case err := <-req.err:
			return err
		default:
			return ErrClosed
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) writer() {
	defer close(s.stopped)
	for {
		var batch []*writeReq
		select {
		case req := <-s.writes:
			batch = append(batch, req)
		case <-s.done:
			return
		}
	drain:
		for len(batch) < 512 {
			select {
			case req := <-s.writes:
				batch = append(batch, req)
			default:
				break drain
			}
		}
		err := s.checkFile()
		if err == nil {
			err = s.update(batch)
		}
		if info, serr := os.Stat(s.path); err == nil && serr == nil {
			s.size = info.Size()
		}
		for _, req := range batch {
			req.err <- err
		}
	}
}

// update applies a batch in one transaction.
func (s *Store) update(batch []*writeReq) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, req := range batch {
			for _, op := range req.ops {
				if err := apply(tx, op); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: write store %s: %w", s.path, err)
	}
	return nil
}

// checkFile reports whether the store's path still names the file it
// opened. Once it does not, every write is refused: it would go to a file
// that the next start does not open.
func (s *Store) checkFile() error {
	info, err := os.Stat(s.path)
	if err == nil && os.SameFile(info, s.opened) {
		if info.Size() < s.size {
			return fmt.Errorf("%w: %s is %d bytes, and was %d; writes are refused. Stop the process, restore the file from a backup and restart",
				ErrFileTruncated, s.path, info.Size(), s.size)
		}
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: check store %s: %w", s.path, err)
	}
	if open := openCopy(s.path); open != "" {
		return fmt.Errorf("%w: %s; writes are refused, since they would be lost at the next start. "+
			"While this process runs, its content is readable at %s: put it back with 'cp %s %s', then restart the process",
			ErrFileGone, s.path, open, open, s.path)
	}
	return fmt.Errorf("%w: %s; writes are refused, since they would be lost at the next start. "+
		"Restore the file from a backup and restart the process", ErrFileGone, s.path)
}

// openCopy names the link under /proc through which this process still
// reads path's file after it was removed, or "" if there is none (not
// Linux).
func openCopy(path string) string {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return ""
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && (target == path+" (deleted)" || target == path) {
			return fmt.Sprintf("/proc/%d/fd/%s", os.Getpid(), e.Name())
		}
	}
	return ""
}

func apply(tx *bolt.Tx, op Op) error {
	b := tx.Bucket([]byte(op.Bucket))
	if b == nil {
		return fmt.Errorf("no bucket %q", op.Bucket)
	}
	key := []byte(op.Key)
	switch {
	case op.Prefix:
		var keys [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(key); k != nil && bytes.HasPrefix(k, key); k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	case op.Value == nil:
		return b.Delete(key)
	default:
		return b.Put(key, op.Value)
	}
}

// Get returns a copy of one value, or nil if it is absent.
func (s *Store) Get(bucket, key string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte(bucket)).Get([]byte(key)); v != nil {
			out = bytes.Clone(v)
		}
		return nil
	})
	return out, err
}

// ForEach calls fn with a copy of every key and value in bucket.
func (s *Store) ForEach(bucket string, fn func(key string, value []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucket)).ForEach(func(k, v []byte) error {
			return fn(string(k), bytes.Clone(v))
		})
	})
}

// Close stops the writer and closes the file. It is idempotent.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		<-s.stopped
		err = s.db.Close()
	})
	return err
}
