package hub

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// followRetry is the pause before a broken etcd watch is opened again.
const followRetry = 200 * time.Millisecond

// follower lets tests hold a replica's watch, as a long partition would.
type follower struct {
	mu     sync.Mutex
	cancel context.CancelFunc // of the current watch
	gate   chan struct{}      // while held: closed to release
}

// follow applies what other replicas write to etcd, from revision from
// on, and relays it to this replica's subscribers. A watch that fell
// behind compaction reads everything again.
func (s *Server) follow(ctx context.Context, eb *etcdBackend, from int64) error {
	for {
		if !s.follower.wait(ctx) {
			return nil
		}
		wctx, cancel := context.WithCancel(ctx)
		s.follower.set(cancel)
		next, err := eb.watch(wctx, from, s.applyChanges)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		from = next
		if errors.Is(err, errCompacted) {
			s.log.Warn("etcd watch fell behind compaction: reading everything again", "err", err)
			rev, err := s.resync(ctx, eb)
			if err != nil {
				s.log.Error("resync from etcd failed; retrying", "err", err)
			} else {
				from = rev + 1
			}
		} else if err != nil && !errors.Is(err, context.Canceled) {
			s.log.Warn("etcd watch broke; resuming", "from_revision", from, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followRetry):
		}
	}
}

func (f *follower) wait(ctx context.Context) bool {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate == nil {
		return true
	}
	select {
	case <-gate:
		return true
	case <-ctx.Done():
		return false
	}
}

func (f *follower) set(cancel context.CancelFunc) {
	f.mu.Lock()
	f.cancel = cancel
	f.mu.Unlock()
}

// hold stops the watch until release is called.
func (f *follower) hold() (release func()) {
	f.mu.Lock()
	gate := make(chan struct{})
	f.gate = gate
	if f.cancel != nil {
		f.cancel()
	}
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		f.gate = nil
		f.mu.Unlock()
		close(gate)
	}
}

// applyChanges applies one revision's changes: records, removals and
// imported bundles. Deleted records need nothing: a removal or a new
// incarnation, written with them, says what they mean.
func (s *Server) applyChanges(changes []change) {
	var recs []registry.Verified
	for _, c := range changes {
		switch {
		case c.foreign != "":
			s.log.Error("etcd key under the hub's prefix is not federate's: ignored", "key", c.foreign)
		case c.value == nil:
		case c.bucket == store.BucketRecords:
			v, err := decodeRecord(c.key, c.value)
			if err != nil {
				s.log.Error("record in etcd is not valid: ignored", "key", c.key, "err", err)
				continue
			}
			recs = append(recs, v)
		case c.bucket == store.BucketMeta:
			// In order: records stored before a removal are applied
			// before it, not after.
			if len(recs) > 0 {
				s.applyRecords(recs)
				recs = nil
			}
			s.applyMeta(c.key, c.value)
		}
	}
	if len(recs) > 0 {
		s.applyRecords(recs)
	}
}

// applyRecords applies records another replica stored and relays the new
// ones; those this replica stored itself are no longer newer.
func (s *Server) applyRecords(recs []registry.Verified) map[string][]registry.Verified {
	s.pubMu.Lock()
	fresh := s.set.Newer(recs)
	registry.ApplyBundles(s.bundles, s.set, fresh, s.log)
	applied := s.set.Apply(fresh)
	s.pubMu.Unlock()
	byCluster := make(map[string][]registry.Verified)
	for _, v := range applied {
		byCluster[v.Record.GetCluster()] = append(byCluster[v.Record.GetCluster()], v)
	}
	for cluster, out := range byCluster {
		s.fanout(cluster, out)
	}
	return byCluster
}

func (s *Server) applyMeta(key string, value []byte) {
	if cluster, ok := strings.CutPrefix(key, store.MetaRemovedPrefix); ok && len(value) == 8 {
		s.applyRemoval(cluster, time.Unix(0, int64(binary.BigEndian.Uint64(value))))
		return
	}
	if name, ok := strings.CutPrefix(key, metaExternalPrefix); ok {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return
		}
		b, err := trust.ParseBundle(td, value)
		if err != nil {
			s.log.Error("imported bundle in etcd is not valid: ignored", "key", key, "err", err)
			return
		}
		if changed, err := s.external.Update(b); err == nil && changed {
			s.broadcast(&hubpb.SubscribeResponse{ExternalBundles: []*hubpb.ExternalBundle{{TrustDomain: name, Bundle: value}}}, "")
		}
	}
}

// applyRemoval applies a removal another replica stored, as RemoveCluster
// does on its own: the cluster's credentials are refused here too.
func (s *Server) applyRemoval(cluster string, at time.Time) {
	s.pubMu.Lock()
	if s.removed[cluster].Equal(at) {
		s.pubMu.Unlock()
		return
	}
	s.forgetCluster(cluster, at)
	s.pubMu.Unlock()
	s.broadcast(&hubpb.SubscribeResponse{Removals: []*hubpb.Removal{{Cluster: cluster, RemovedAt: at.UnixNano()}}}, "")
	n := s.endStreams(cluster, removedError(cluster))
	s.log.Warn("cluster removed from the federation by another replica", "cluster", cluster, "streams_closed", n)
}

// resync reads every record and removal again, after a watch missed
// changes, in one read at one revision; it returns that revision.
func (s *Server) resync(ctx context.Context, eb *etcdBackend) (int64, error) {
	var (
		recs []registry.Verified
		meta []change
	)
	signers := make(registry.SignerCache)
	rev, err := eb.readAll(ctx, eb.cfg.Prefix, func() { recs, meta = nil, nil }, func(kv *mvccpb.KeyValue) error {
		bucket, key, ok := eb.split(string(kv.Key))
		switch {
		case ok && bucket == store.BucketRecords:
			v, err := decodeRecord(key, kv.Value)
			if err != nil {
				return fmt.Errorf("hub: load %s: record %q: %w", eb.Where(), key, err)
			}
			signers.Intern(v.Signed)
			recs = append(recs, v)
		case ok && bucket == store.BucketMeta:
			meta = append(meta, change{bucket: bucket, key: key, value: kv.Value})
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	// Removals first: records stored after one (a cluster that joined
	// again) must survive it.
	for _, m := range meta {
		s.applyMeta(m.key, m.value)
	}
	held := make(map[string]bool)
	for _, v := range recs {
		held[v.Record.GetCluster()] = true
	}
	// A cluster with no record left in etcd was expired or removed.
	s.pubMu.Lock()
	for _, c := range s.set.Clusters() {
		if !held[c] {
			s.set.Remove(c)
		}
	}
	s.pubMu.Unlock()
	relayed := s.applyRecords(recs)
	n := 0
	for _, out := range relayed {
		n += len(out)
	}
	s.log.Info("resynced from etcd", "revision", rev, "records", len(recs), "relayed", n)
	return rev, nil
}
