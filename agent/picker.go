package agent

import (
	"slices"
	"sync/atomic"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/registry/registrypb"
)

// Picker orders an upstream's targets for one connection: the first is
// tried first, the rest are fallbacks on connect failure.
type Picker interface {
	Order(targets []*agentpb.Target, local *registrypb.Locality) []*agentpb.Target
}

// newPicker returns the sidecar's picker. It prefers healthy targets, then
// the closest locality (same zone, then same region), and rotates among
// equals so that connections spread.
func newPicker() Picker { return &localityRoundRobin{} }

type localityRoundRobin struct{ next atomic.Uint64 }

func (p *localityRoundRobin) Order(targets []*agentpb.Target, local *registrypb.Locality) []*agentpb.Target {
	var healthy []*agentpb.Target
	for _, t := range targets {
		if t.GetHealth() != registrypb.Health_UNHEALTHY && t.GetWeight() > 0 {
			healthy = append(healthy, t)
		}
	}
	if len(healthy) == 0 {
		return nil
	}
	rank := func(t *agentpb.Target) int {
		l := t.GetLocality()
		switch {
		case local.GetRegion() == "" || l.GetRegion() != local.GetRegion():
			return 2
		case l.GetZone() != local.GetZone():
			return 1
		}
		return 0
	}
	slices.SortStableFunc(healthy, func(a, b *agentpb.Target) int { return rank(a) - rank(b) })
	best := 1
	for best < len(healthy) && rank(healthy[best]) == rank(healthy[0]) {
		best++
	}
	n := int(p.next.Add(1) % uint64(best))
	out := make([]*agentpb.Target, 0, len(healthy))
	out = append(out, healthy[n:best]...)
	out = append(out, healthy[:n]...)
	return append(out, healthy[best:]...)
}
