package member

import (
	"context"

	"github.com/federate/federate/gossip"
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
