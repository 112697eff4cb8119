package hub

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// metaReplicaPrefix keys, in etcd, each serving replica's addresses,
// under a lease: a replica that stops or loses etcd drops out of the list
// after replicaTTL.
const (
	metaReplicaPrefix = "replicas/"
	replicaTTL        = 10 // seconds
)

type replicaInfo struct {
	API    string `json:"api"`
	Gossip string `json:"gossip,omitempty"`
}

// announce keeps this replica listed in etcd while it serves.
func (s *Server) announce(ctx context.Context, eb *etcdBackend) error {
	me, _ := json.Marshal(replicaInfo{API: s.cfg.Advertise, Gossip: s.gossip.Addr()})
	// Replicas behind one load-balanced name advertise the same address:
	// each has a key of its own all the same.
	key := eb.key(store.BucketMeta, metaReplicaPrefix+s.replicaID)
	for {
		if err := s.keepListed(ctx, eb, key, string(me)); err != nil && ctx.Err() == nil {
			s.log.Warn("list this replica in etcd; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			// Leave the list at once rather than after the lease.
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = eb.cli.Delete(dctx, key)
			cancel()
			return nil
		case <-time.After(time.Second):
		}
	}
}

// keepListed puts the replica's key under a lease and keeps the lease
// alive until ctx ends or etcd lets it lapse.
func (s *Server) keepListed(ctx context.Context, eb *etcdBackend, key, value string) error {
	gctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	lease, err := eb.cli.Grant(gctx, replicaTTL)
	if err == nil {
		_, err = eb.cli.Put(gctx, key, value, clientv3.WithLease(lease.ID))
	}
	cancel()
	if err != nil {
		return eb.unavailable("write", err)
	}
	alive, err := eb.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return eb.unavailable("write", err)
	}
	for range alive {
	}
	return nil
}

// replicas lists the serving replicas, this one first; a hub on bbolt is
// its only replica. If etcd cannot say, it is this one alone.
func (s *Server) replicas(ctx context.Context) []replicaInfo {
	out, err := s.listReplicas(ctx)
	if err != nil {
		s.log.Warn("list hub replicas in etcd", "err", err)
	}
	return out
}

// listReplicas is replicas, with etcd's error.
func (s *Server) listReplicas(ctx context.Context) ([]replicaInfo, error) {
	self := replicaInfo{API: s.cfg.Advertise, Gossip: s.gossip.Addr()}
	out := []replicaInfo{self}
	eb, ok := s.backend.(*etcdBackend)
	if !ok {
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	var resp *clientv3.GetResponse
	err := eb.idempotent(ctx, func(ctx context.Context) (err error) {
		resp, err = eb.cli.Get(ctx, eb.key(store.BucketMeta, metaReplicaPrefix), clientv3.WithPrefix())
		return err
	})
	if err != nil {
		return out, err
	}
	for _, kv := range resp.Kvs {
		var r replicaInfo
		if json.Unmarshal(kv.Value, &r) == nil && r.API != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out[1:], func(a, b replicaInfo) int { return strings.Compare(a.API, b.API) })
	return out, nil
}

// hubAddrs is what tokens name as the hub: every serving replica's
// address, this one first, separated by commas.
func (s *Server) hubAddrs(ctx context.Context) string {
	return strings.Join(apiAddrs(s.replicas(ctx)), ",")
}

// apiAddrs is the replicas' API addresses, each once, in order.
func apiAddrs(rs []replicaInfo) []string {
	var addrs []string
	for _, r := range rs {
		if !slices.Contains(addrs, r.API) {
			addrs = append(addrs, r.API)
		}
	}
	return addrs
}

// hubsRefresh is how often a replica on etcd reads the list of replicas,
// to tell its subscribers when it changed: a replica joins the list once
// it serves and leaves it when it stops, or replicaTTL after it died.
const hubsRefresh = 5 * time.Second

// knownHubs is the API address of every serving replica, sorted, as
// subscribers learn it: on the synced message of each stream, and again
// whenever it changes.
func (s *Server) knownHubs() []string {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	return s.hubs
}

// followReplicas tells every subscriber when the replicas change. A list
// that etcd could not give is not news.
func (s *Server) followReplicas(ctx context.Context) error {
	tick := time.NewTicker(hubsRefresh)
	defer tick.Stop()
	for {
		// etcd's health is logged and reported elsewhere.
		if rs, err := s.listReplicas(ctx); err == nil {
			s.setHubs(apiAddrs(rs))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// setHubs makes hubs the list subscribers learn, and sends it to those
// streaming now if it changed.
func (s *Server) setHubs(hubs []string) {
	hubs = slices.Sorted(slices.Values(hubs))
	s.subMu.Lock()
	changed := s.hubs != nil && !slices.Equal(s.hubs, hubs)
	s.hubs = hubs
	s.subMu.Unlock()
	if changed {
		s.log.Info("hub replicas changed; telling the subscribers", "hubs", hubs)
		s.broadcast(&hubpb.SubscribeResponse{Hubs: hubs}, "")
	}
}
