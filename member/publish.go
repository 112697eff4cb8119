package member

import (
	"context"
	"fmt"
	"net"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
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
	desired, err := m.desiredSlice(info, services)
	if err != nil {
		return err
	}
	n, err := m.updateLocal(ctx, desired, false)
	if err != nil || n == 0 {
		return err
	}
	m.announce()
	return nil
}

// desiredSlice is our slice's records by key as Update is asked for them.
func (m *Member) desiredSlice(info *registry.ClusterInfo, services []*registry.Service) (map[string]proto.Message, error) {
	desired := make(map[string]proto.Message, len(services)+1)
	desired[registry.InfoKey] = m.describe(info)
	for _, s := range services {
		if _, dup := desired[s.GetHostname()]; dup || s.GetHostname() == "" {
			return nil, fmt.Errorf("member: service hostname %q is empty or listed twice", s.GetHostname())
		}
		desired[s.GetHostname()] = s
	}
	return desired, nil
}

// announce sends what updateLocal changed on its way. The hub is the
// fast path; the digest follows on its own goroutine, since spreading it
// waits for gossip rounds.
func (m *Member) announce() {
	signal(m.publishNow)
	signal(m.advertiseNow)
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
			m.mu.Lock()
			m.acked = nil // resend everything once the hub is back
			m.mu.Unlock()
			if m.hubRefused(err) {
				if !waitRefused(ctx, m.publishNow) {
					return nil
				}
				continue
			}
			m.log.Warn("publish to hub failed; retrying", "hub", m.hubAddr(), "err", err)
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
