package hub

import (
	"context"
	"sync"
)

// clusterLocks serialize what changes one cluster's slice on this
// replica: its publishes, its expiry and its removal. Publishes of
// different clusters reach the store at once; pubMu is held only to
// apply what was stored, never across a store call of a publish.
type clusterLocks struct {
	mu    sync.Mutex
	locks map[string]chan struct{} // a token in the channel: unlocked
}

// lock takes cluster's lock, waiting at most until ctx ends: a publish
// whose caller gave up is not stored after all. Take it before pubMu,
// never while holding pubMu.
func (l *clusterLocks) lock(ctx context.Context, cluster string) (unlock func(), err error) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = make(map[string]chan struct{})
	}
	ch := l.locks[cluster]
	if ch == nil {
		ch = make(chan struct{}, 1)
		ch <- struct{}{}
		l.locks[cluster] = ch
	}
	l.mu.Unlock()
	select {
	case <-ch:
		return func() { ch <- struct{}{} }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// mustLock takes cluster's lock however long it takes.
func (l *clusterLocks) mustLock(cluster string) (unlock func()) {
	unlock, _ = l.lock(context.Background(), cluster)
	return unlock
}
