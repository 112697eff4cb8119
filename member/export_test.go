package member

import (
	"context"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/trust"
)

// What the tests in package member_test see of a member's inside.

// GossipMembers is the gossip membership as the member sees it.
func (m *Member) GossipMembers() []gossip.MemberState { return m.gossip.Members() }

// Credential is the member's cluster credential.
func (m *Member) Credential() *trust.Credential { return m.cfg.Credential }

// Load restores the stored state, as Run does first, without serving.
func (m *Member) Load(ctx context.Context) error { return m.load(ctx) }

// HubSynced reports whether the member's stream from the hub is synced.
func (m *Member) HubSynced() bool { return m.hubConnected() }

// GossipStats is what the member's gossip refused, and its open
// connections by peer.
func (m *Member) GossipStats() gossip.Stats { return m.gossip.Stats() }

// PeerFetches is how many fetches the member asked of peers.
func (m *Member) PeerFetches() int64 { return m.peerFetches.Load() }

// UpdateAround is Update with between run after it compared the list with
// the slice and before it takes the lock to write what differed; it
// returns how many records it wrote.
func (m *Member) UpdateAround(ctx context.Context, info *registry.ClusterInfo, services []*registry.Service, between func()) (int, error) {
	desired, err := m.desiredSlice(info, services)
	if err != nil {
		return 0, err
	}
	p := m.planSlice(desired, false)
	between()
	n, err := m.commitSlice(ctx, p, desired, false)
	if n > 0 {
		m.announce()
	}
	return n, err
}
