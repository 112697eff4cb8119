package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
)

// What the external tests read of a running hub's state.

// EtcdEndpointsInUse returns the etcd endpoints the hub's client calls,
// or nil for a hub on bbolt.
func (s *Server) EtcdEndpointsInUse() []string {
	if eb, ok := s.backend.(*etcdBackend); ok {
		return eb.cli.Endpoints()
	}
	return nil
}

// SliceVersion returns the version of a cluster's slice the hub holds, or nil.
func (s *Server) SliceVersion(cluster string) *registry.Version { return s.set.Version(cluster) }

// SliceClusters returns the clusters whose slices the hub holds, sorted.
func (s *Server) SliceClusters() []string { return s.set.Clusters() }

// TokenUsedAt returns when the hub recorded the use of the token with this
// ID: zero if it was never used.
func (s *Server) TokenUsedAt(id string) (time.Time, error) {
	data, err := s.backend.Get(context.Background(), store.BucketTokens, id)
	if err != nil {
		return time.Time{}, err
	}
	if data == nil {
		return time.Time{}, fmt.Errorf("hub has no record of token %s", id)
	}
	var rec tokenRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return time.Time{}, err
	}
	return rec.UsedAt, nil
}

// SubscribersOf counts the open Subscribe streams of one cluster.
func (s *Server) SubscribersOf(cluster string) int {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	n := 0
	for sub := range s.subs {
		if sub.cluster == cluster {
			n++
		}
	}
	return n
}

// MaxUnauthenticatedConns is the limit of open connections without a
// client certificate.
const MaxUnauthenticatedConns = maxUnauthenticatedConns

// HoldWatch stops a replica's etcd watch until release is called, as a
// long partition from etcd would.
func (s *Server) HoldWatch() (release func()) { return s.follower.hold() }
