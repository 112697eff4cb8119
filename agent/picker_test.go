package agent

import (
	"math"
	"slices"
	"testing"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/registry/registrypb"
)

func target(addr string, priority, weight uint32, health registrypb.Health) *agentpb.Target {
	return &agentpb.Target{
		Address: addr, Ports: map[uint32]uint32{8080: 9000}, Priority: priority, Weight: weight, Health: health,
		Locality: &registrypb.Locality{Region: "r", Zone: "z" + string(rune('0'+priority))},
	}
}

func tries(p *Picker) []string {
	var out []string
	for t := range p.Tries() {
		out = append(out, t.GetAddress())
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// The picker applies the control plane's priorities with Envoy's
// spill-over math and the targets' weights, and on connect failures
// falls back first within the priority, then to the next.
func TestPickerPrioritiesAndWeights(t *testing.T) {
	healthy, unhealthy := registrypb.Health_HEALTHY, registrypb.Health_UNHEALTHY
	up := &agentpb.Upstream{
		Targets: []*agentpb.Target{
			target("10.0.0.1", 0, 1, healthy),
			target("10.0.0.2", 0, 3, healthy),
			target("10.0.1.1", 1, 1, healthy),
			// Not serving port 8080: never picked.
			{Address: "10.0.9.9", Ports: map[uint32]uint32{9090: 9000}, Health: healthy},
		},
		Balance: map[uint32]*agentpb.Balance{8080: {PanicThreshold: 50}},
	}
	p := NewPicker(up, 8080)
	shares := p.Shares()
	if !near(shares["10.0.0.1:9000"], 0.25) || !near(shares["10.0.0.2:9000"], 0.75) || len(shares) != 2 {
		t.Errorf("shares with priority 0 healthy = %v, want 0.25/0.75 by weight and nothing for priority 1", shares)
	}
	got := tries(p)
	if len(got) != 3 || got[2] != "10.0.1.1" || !slices.Contains(got[:2], "10.0.0.1") || !slices.Contains(got[:2], "10.0.0.2") {
		t.Errorf("tries = %v, want both priority-0 targets, then the priority-1 one", got)
	}

	// One of two priority-0 targets unhealthy: 50% health x 1.4 keeps
	// 70% of the load there and spills 30% to priority 1.
	up.Targets[0].Health, up.Targets[1].Weight = unhealthy, 1
	shares = NewPicker(up, 8080).Shares()
	if !near(shares["10.0.0.2:9000"], 0.7) || !near(shares["10.0.1.1:9000"], 0.3) || shares["10.0.0.1:9000"] != 0 {
		t.Errorf("shares with half of priority 0 unhealthy = %v, want 0.7 and 0.3 spilled over", shares)
	}
	// Once both healthy targets failed, every level is in panic and, as
	// in Envoy, the unhealthy one is tried too; with panic off it never is.
	if got := tries(NewPicker(up, 8080)); len(got) != 3 || got[2] != "10.0.0.1" {
		t.Errorf("tries = %v, want the two healthy targets, then the unhealthy one in panic", got)
	}
	up.Balance[8080].PanicThreshold = 0
	if got := tries(NewPicker(up, 8080)); len(got) != 2 || slices.Contains(got, "10.0.0.1") {
		t.Errorf("tries with panic off = %v, want the two healthy targets only", got)
	}
}

// A configuration with priority gaps, unsorted targets, no balance and
// every target unhealthy picks nothing wrong and never panics.
func TestPickerBadConfiguration(t *testing.T) {
	up := &agentpb.Upstream{Targets: []*agentpb.Target{
		target("10.0.0.9", 9, 1, registrypb.Health_HEALTHY),
		target("10.0.0.5", 5, 1, registrypb.Health_HEALTHY),
		{Address: "", Ports: map[uint32]uint32{8080: 1}},
	}}
	if got := tries(NewPicker(up, 8080)); !slices.Equal(got, []string{"10.0.0.5", "10.0.0.9"}) {
		t.Errorf("tries = %v, want priority 5 before 9 and no target without an address", got)
	}
	for _, tg := range up.Targets {
		tg.Health = registrypb.Health_UNHEALTHY
	}
	if got := tries(NewPicker(up, 8080)); len(got) != 0 {
		t.Errorf("tries with every target unhealthy and panic off = %v, want none", got)
	}
	if got := tries(NewPicker(&agentpb.Upstream{}, 8080)); len(got) != 0 {
		t.Errorf("tries with no targets = %v", got)
	}
}
