package hub

import (
	"errors"
	"time"
)

// loopStall is how long the hub's maintenance loop, which runs every
// second, may go without a turn before the hub counts as wedged.
const loopStall = 30 * time.Second

// Live reports whether the hub's process is alive and its maintenance loop
// (liveness, expiry, credential renewal) still turns; /livez and the gRPC
// health service "liveness" serve it. A failing Live asks the kubelet for
// a restart.
func (s *Server) Live() error {
	return s.maintained.Check("hub: the maintenance loop", loopStall)
}

// Readiness reports whether the hub serves: its store is loaded, its
// listeners and gossip are up and its store takes writes. /readyz and the
// gRPC health service "" serve it.
func (s *Server) Readiness() error {
	if !s.started() {
		return errors.New("hub: starting: loading the store and joining gossip")
	}
	return s.StoreError()
}
