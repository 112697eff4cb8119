package member

import (
	"errors"
	"time"
)

// loopStall is how long the maintenance loop, which turns every second
// at most, may go without a turn before the member counts as wedged.
const loopStall = 30 * time.Second

// Live reports whether the member's maintenance loop (liveness, expiry,
// credential renewal) still turns.
func (m *Member) Live() error {
	return m.maintained.Check("member: the maintenance loop", loopStall)
}

// Federated reports whether the member knows the federation: the hub's
// stream synced once, or the store or a peer brought other clusters'
// state. Before that, what it would serve is only its own cluster.
func (m *Member) Federated() error {
	if !m.started() {
		return errors.New("member: starting: loading the store and joining gossip")
	}
	if !m.federated.Load() {
		return errors.New("member: no federation state yet: the hub is not reachable and neither the store nor a peer had any")
	}
	return nil
}
