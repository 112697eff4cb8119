package member

import (
	"context"
	"fmt"
	"net"
	"sort"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"google.golang.org/protobuf/proto"
)

func (m *Member) digest() gossip.Digest {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := gossip.Digest{Name: m.cfg.Cluster, Cluster: m.cfg.Cluster, Incarnation: m.incarnation, Counter: m.counter, API: m.cfg.Advertise}
	if info := m.ownInfo(); info != nil {
		d.BundleSequence = info.GetBundleSequence()
		if gws := info.GetGateways(); len(gws) > 0 {
			d.Gateway = net.JoinHostPort(gws[0].GetAddress(), fmt.Sprint(gws[0].GetPort()))
		}
	}
	return d
}

func (m *Member) ownInfo() *registry.ClusterInfo { return m.set.Info(m.cfg.Cluster) }

// Update replaces this cluster's exported state. Only what changed is
// re-signed, stored and published.
func (m *Member) Update(ctx context.Context, info *registry.ClusterInfo, services []*registry.Service) error {
	info = m.describe(info)
	desired := map[string]proto.Message{registry.InfoKey: info}
	for _, s := range services {
		if _, dup := desired[s.GetHostname()]; dup || s.GetHostname() == "" {
			return fmt.Errorf("member: service hostname %q is empty or listed twice", s.GetHostname())
		}
		desired[s.GetHostname()] = s
	}
	n, err := m.updateLocal(ctx, desired, false)
	if err != nil || n == 0 {
		return err
	}
	// The hub is the fast path; the digest follows on its own goroutine,
	// since spreading it waits for gossip rounds.
	signal(m.publishNow)
	signal(m.advertiseNow)
	return nil
}

// updateLocal signs, stores and applies the records that differ from
// desired, and returns how many there were. Unless partial, keys missing
// from desired are withdrawn.
func (m *Member) updateLocal(ctx context.Context, desired map[string]proto.Message, partial bool) (int, error) {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	m.mu.Lock()
	incarnation, counter := m.incarnation, m.counter
	m.mu.Unlock()
	current := m.set.Entries(m.cfg.Cluster)
	signer := registry.Signer{Cluster: m.cfg.Cluster, Key: m.cfg.Credential.Key(), Cert: m.cfg.Credential.Leaf().Raw}
	now := m.cfg.Now().UnixNano()
	var out []registry.Verified
	sign := func(rec *registry.Record) error {
		counter++
		rec.Cluster = m.cfg.Cluster
		rec.Version = &registry.Version{Incarnation: incarnation, Counter: counter}
		rec.SignedAt = now
		sr, err := signer.Sign(rec)
		if err != nil {
			return err
		}
		out = append(out, registry.Verified{Record: rec, Signed: sr})
		return nil
	}
	keys := make([]string, 0, len(desired))
	for k := range desired {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want := desired[k]
		cur := current[k]
		if cur != nil && !cur.Deleted && cur.Version.GetIncarnation() == incarnation &&
			(k == registry.InfoKey && proto.Equal(cur.Info, want) || k != registry.InfoKey && proto.Equal(cur.Service, want)) {
			continue
		}
		rec := &registry.Record{Key: k}
		if k == registry.InfoKey {
			rec.Body = &registrypb.Record_Info{Info: want.(*registry.ClusterInfo)}
		} else {
			// A copy: the caller may change its services in place later.
			rec.Body = &registrypb.Record_Service{Service: proto.Clone(want).(*registry.Service)}
		}
		if err := sign(rec); err != nil {
			return 0, err
		}
	}
	for k, cur := range current {
		if _, ok := desired[k]; !ok && !cur.Deleted && !partial {
			if err := sign(&registry.Record{Key: k, Deleted: true}); err != nil {
				return 0, err
			}
		}
	}
	if len(out) == 0 {
		return 0, nil
	}
	if err := m.cfg.Store.Write(ctx, store.RecordOps(m.set, out)...); err != nil {
		return 0, err
	}
	m.set.Apply(out)
	m.mu.Lock()
	m.counter = counter
	m.notifyLocked()
	m.mu.Unlock()
	m.log.Debug("slice updated", "records", len(out), "version", fmt.Sprintf("%d.%d", incarnation, counter))
	return len(out), nil
}

// advertiseLoop gossips our digest after every change. Gossip.SetLocal
// blocks until memberlist has spread the update (up to a second), so it
// never runs on the caller of Update.
func (m *Member) advertiseLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.advertiseNow:
		}
		m.gossip.SetLocal(m.digest())
	}
}

// publishLoop sends own records the hub has not confirmed.
func (m *Member) publishLoop(ctx context.Context) error {
	backoff := newBackoff()
	for {
		if err := m.publish(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.log.Warn("publish to hub failed; retrying", "hub", m.cfg.Hub, "err", err)
			m.mu.Lock()
			m.acked = nil // resend everything once the hub is back
			m.mu.Unlock()
			// The hub stream's resync wakes us: no need to sleep out the
			// backoff once the hub is back.
			if !backoff.Wait(ctx, m.publishNow) {
				return nil
			}
			continue
		}
		backoff.Reset()
		select {
		case <-ctx.Done():
			return nil
		case <-m.publishNow:
		}
	}
}

func (m *Member) publish(ctx context.Context) error {
	m.mu.Lock()
	acked := m.acked
	m.mu.Unlock()
	own := m.set.SliceSince(m.cfg.Cluster, acked)
	if len(own) == 0 {
		return nil
	}
	conn, err := m.conn(m.hubAddr(), membership.HubID(m.td))
	if err != nil {
		return err
	}
	client := hubpb.NewHubClient(conn)
	var last *registry.Version
	err = membership.SendBatches(own, func(b []*registrypb.SignedRecord, _ bool) error {
		cctx, cancel := context.WithTimeout(ctx, membership.CallTimeout)
		defer cancel()
		resp, err := client.Publish(cctx, &hubpb.PublishRequest{Records: b})
		if err != nil {
			return err
		}
		last = resp.GetVersion()
		return nil
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.acked = last
	m.mu.Unlock()
	return nil
}
