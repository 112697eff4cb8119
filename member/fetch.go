package member

import (
	"context"
	"fmt"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/retry"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"google.golang.org/grpc"
)

// Peer fetch: versions heard of by gossip that the hub did not bring.

// onDigest runs on the gossip goroutine: schedule a peer fetch if the digest
// is newer than what we hold.
func (m *Member) onDigest(d gossip.Digest) {
	if d.Cluster == "" || d.Cluster == m.cfg.Cluster || d.Incarnation == 0 {
		return
	}
	if registry.Compare(d.Version(), m.set.Version(d.Cluster)) <= 0 {
		return
	}
	m.mu.Lock()
	delay := peerFetchDelay
	switch {
	case !m.hubSynced:
		delay = 0
	case m.cfg.Now().Sub(m.hubHeard) < hubFlowingWindow:
		delay = laggingHubFetchDelay
	}
	// The earlier wins: a digest brings a retry's backoff forward, and a
	// fetch already due keeps its time.
	at := m.cfg.Now().Add(delay)
	if due, ok := m.due[d.Cluster]; !ok || at.Before(due) {
		m.due[d.Cluster] = at
	}
	m.mu.Unlock()
	signal(m.fetchNow)
}

// fetchLoop fetches versions heard of by gossip that the hub did not bring.
func (m *Member) fetchLoop(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	// A failed fetch is tried again after a jittered backoff per cluster,
	// or sooner if a digest brings it forward.
	backoffs := make(map[string]*retry.Backoff)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-m.fetchNow:
		}
		now := m.cfg.Now()
		m.mu.Lock()
		var ready []string
		for c, at := range m.due {
			if !now.Before(at) {
				ready = append(ready, c)
				delete(m.due, c)
			}
		}
		m.mu.Unlock()
		for _, c := range ready {
			err := m.fetchFromPeers(ctx, c)
			if err == nil {
				delete(backoffs, c)
				continue
			}
			if backoffs[c] == nil {
				backoffs[c] = newBackoff()
			}
			wait := backoffs[c].Next()
			m.log.Warn("peer fetch failed; retrying", "cluster", c, "retry_in", wait, "err", err)
			m.mu.Lock()
			if _, ok := m.due[c]; !ok {
				m.due[c] = m.cfg.Now().Add(wait)
			}
			m.mu.Unlock()
		}
	}
}

// fetchFromPeers asks the owner first, then any other member.
func (m *Member) fetchFromPeers(ctx context.Context, cluster string) error {
	var want *registry.Version
	var sources []gossip.MemberState
	for _, ms := range m.gossip.Members() {
		if ms.Cluster == cluster {
			want = ms.Version()
			sources = append([]gossip.MemberState{ms}, sources...)
		} else if ms.API != "" && ms.Cluster != m.cfg.Cluster {
			sources = append(sources, ms)
		}
	}
	if registry.Compare(want, m.set.Version(cluster)) <= 0 {
		return nil
	}
	known := m.set.Versions()
	var lastErr error = errNoSource
	for _, src := range sources {
		if src.API == "" {
			continue
		}
		resp, err := m.fetchFrom(ctx, src, known)
		if err != nil {
			lastErr = fmt.Errorf("%s: %w", src.Name, err)
			continue
		}
		m.receive(ctx, resp.GetRecords(), src.Name)
		if !m.Imports().All() {
			// Only a scoped member leaves records out; one that imports
			// everything trusts the records alone, as before.
			m.advance(ctx, resp.GetComplete())
		}
		if registry.Compare(m.set.Version(cluster), want) >= 0 {
			m.log.Info("caught up from a peer", "cluster", cluster, "peer", src.Name, "version", registry.FormatVersion(want))
			return nil
		}
	}
	return lastErr
}

// fetchFrom asks one source for what we import newer than known. A
// connection to a hub is kept; one to a cluster is closed after the
// fetch: when the hub lags (a whole fleet publishing at once) every member
// fetches from every owner, and kept connections would pile up to one per
// pair of clusters, each holding a descriptor on both ends for good.
func (m *Member) fetchFrom(ctx context.Context, src gossip.MemberState, known map[string]*registry.Version) (*hubpb.FetchResponse, error) {
	var conn *grpc.ClientConn
	var err error
	if src.Cluster == "" {
		conn, err = m.conn(src.API, membership.HubID(m.td))
	} else {
		conn, err = m.newConn(src.API, membership.ClusterID(m.td, src.Cluster))
		if conn != nil {
			defer conn.Close()
		}
	}
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, membership.CallTimeout)
	defer cancel()
	m.peerFetches.Add(1)
	return hubpb.NewRegistryClient(conn).Fetch(cctx, &hubpb.FetchRequest{Known: &hubpb.VersionVector{Versions: known}, Imports: m.fetchImports()})
}
