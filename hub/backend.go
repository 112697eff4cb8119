package hub

import (
	"bytes"
	"context"
	"sync"

	"github.com/federate/federate/registry/store"
)

// Store names for Config.Store.
const (
	StoreBolt = "bbolt" // one hub, a bbolt file in the data directory (the default)
	StoreEtcd = "etcd"  // any number of replicas sharing one etcd
)

// backend is what the hub keeps its state in: the records, tokens and meta
// buckets of registry/store, in a bbolt file for one hub or in etcd for
// replicas. It is the narrowest surface the hub needs.
type backend interface {
	// Get returns one value, or nil if it is absent.
	Get(ctx context.Context, bucket, key string) ([]byte, error)
	// ForEach calls fn with every key and value of bucket.
	ForEach(ctx context.Context, bucket string, fn func(key string, value []byte) error) error
	// Write applies ops and returns once they are durable.
	Write(ctx context.Context, ops ...store.Op) error
	// WriteIf applies ops only if key in bucket still holds want (absent
	// when want is nil), atomically; it reports whether it did. Single-use
	// tokens rest on it.
	WriteIf(ctx context.Context, bucket, key string, want []byte, ops ...store.Op) (bool, error)
	// Where names the store in messages; Remedy says what to do when its
	// writes fail.
	Where() string
	Remedy() string
	Close() error
}

// boltBackend is the hub's bbolt file. Only one process opens it (the file
// is locked), so a mutex makes WriteIf atomic.
type boltBackend struct {
	st *store.Store
	mu sync.RWMutex // WriteIf holds it to write; Write shares it
}

func (b *boltBackend) Get(_ context.Context, bucket, key string) ([]byte, error) {
	return b.st.Get(bucket, key)
}

func (b *boltBackend) ForEach(_ context.Context, bucket string, fn func(key string, value []byte) error) error {
	return b.st.ForEach(bucket, fn)
}

func (b *boltBackend) Write(ctx context.Context, ops ...store.Op) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.st.Write(ctx, ops...)
}

func (b *boltBackend) WriteIf(ctx context.Context, bucket, key string, want []byte, ops ...store.Op) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur, err := b.st.Get(bucket, key)
	if err != nil {
		return false, err
	}
	if !bytes.Equal(cur, want) || (cur == nil) != (want == nil) {
		return false, nil
	}
	return true, b.st.Write(ctx, ops...)
}

func (b *boltBackend) Where() string { return "store " + b.st.Path() }
func (b *boltBackend) Remedy() string {
	return "if its disk is full, free space on the disk of " + b.st.Path() + "; if the file was removed, put it back as the error says"
}
func (b *boltBackend) Close() error { return b.st.Close() }
