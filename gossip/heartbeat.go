package gossip

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// Liveness rests on heartbeats, not on memberlist's view: memberlist lets
// any member refute a suspicion for any node name and relays such claims,
// so a member holding any credential could keep another cluster "alive".
// Instead every member sends an empty frame to every other member each
// HeartbeatInterval, and a member counts as alive only while frames
// arrive on connections authenticated as its own identity (identity.go).
// Relayed state never refreshes liveness.

// heartbeatLoop sends a heartbeat to every live member each interval.
// Sends are queued per member (packets.go): a frozen member holds up no
// other.
func (g *Node) heartbeatLoop(ctx context.Context) {
	tick := time.NewTicker(g.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, to := range g.memberAddrs() {
			if _, err := g.transport.WriteToAddress(nil, to); err != nil {
				g.log.Debug("gossip heartbeat not sent", "to", to.String(), "err", err)
			}
		}
	}
}

// memberAddrs are the addresses of the live members, this one excluded.
func (g *Node) memberAddrs() []memberlist.Address {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]memberlist.Address, 0, len(g.members))
	for name, m := range g.members {
		out = append(out, memberlist.Address{Addr: m.Addr, Name: name})
	}
	return out
}

// gossipAlive refuses nodes whose meta does not belong to their name:
// node "west-1a2b3c" must carry west's digest. Whether the node really is
// west is checked on every connection to it.
type gossipAlive Node

// NotifyAlive checks a node's meta. Every member relays every alive
// message it has not seen, so the same node and meta come by many times:
// meta already accepted for the node is not decoded again.
func (a *gossipAlive) NotifyAlive(n *memberlist.Node) error {
	if len(n.Meta) == 0 {
		return nil
	}
	a.mu.Lock()
	known := a.aliveMeta[n.Name] == string(n.Meta)
	a.mu.Unlock()
	if known {
		return nil
	}
	d, err := DecodeDigest(n.Meta)
	if err != nil {
		return err
	}
	if d.Name != n.Name {
		return fmt.Errorf("gossip: node %q carries the digest of node %q", n.Name, d.Name)
	}
	a.mu.Lock()
	a.aliveMeta[n.Name] = string(n.Meta)
	a.mu.Unlock()
	return nil
}
