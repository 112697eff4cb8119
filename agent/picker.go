package agent

import (
	"cmp"
	"iter"
	"slices"
	"strconv"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/locality"
)

// Picker chooses the target of one imported service port for each
// connection, with the priorities and weights the control plane computed
// (locality.Assign) and the same spill-over and weight math as the
// gateway's and Envoy's (locality.Picker). It is immutable.
type Picker struct {
	port    uint32
	targets []*agentpb.Target // those serving port, indexed by the endpoints' targetIndex label
	base    locality.Priorities
	first   *locality.Picker
}

// NewPicker prepares the picker for service port port of up.
func NewPicker(up *agentpb.Upstream, port uint32) *Picker {
	p := &Picker{port: port}
	for _, t := range up.GetTargets() {
		if _, ok := t.GetPorts()[port]; ok && t.GetAddress() != "" {
			p.targets = append(p.targets, t)
		}
	}
	b := up.GetBalance()[port]
	p.base = locality.Priorities{
		LocalityWeighted: b.GetLocalityWeighted(),
		PanicThreshold:   b.GetPanicThreshold(),
		Overprovisioning: cmp.Or(b.GetOverprovisioning(), locality.DefaultOverprovisioning),
	}
	p.base.Groups = groups(p.targets, port, nil)
	p.first = locality.NewPicker(p.base)
	return p
}

// groups rebuilds locality.Priorities' groups from the targets, leaving out
// those in skip. Priorities are renumbered from 0 without gaps, so that a
// malformed configuration cannot index past the levels.
func groups(targets []*agentpb.Target, port uint32, skip map[int]bool) []locality.Group {
	type key struct {
		priority uint32
		locality locality.Locality
	}
	index := make(map[key]int)
	var out []locality.Group
	for i, t := range targets {
		if skip[i] {
			continue
		}
		k := key{t.GetPriority(), locality.FromProto(t.GetLocality())}
		g, ok := index[k]
		if !ok {
			g = len(out)
			index[k] = g
			out = append(out, locality.Group{Locality: k.locality, Priority: k.priority, Weight: max(t.GetLocalityWeight(), 1)})
		}
		out[g].Endpoints = append(out[g].Endpoints, locality.Endpoint{
			Address:  t.GetAddress(),
			Port:     t.GetPorts()[port],
			Locality: k.locality,
			Cluster:  t.GetCluster(),
			Health:   t.GetHealth(),
			Weight:   t.GetWeight(),
			Labels:   map[string]string{targetIndex: strconv.Itoa(i)},
		})
	}
	slices.SortStableFunc(out, func(a, b locality.Group) int { return cmp.Compare(a.Priority, b.Priority) })
	var next, prev uint32
	for i := range out {
		if i > 0 && out[i].Priority != prev {
			next++
		}
		prev = out[i].Priority
		out[i].Priority = next
	}
	return out
}

// targetIndex labels an endpoint with its target's index, so a pick maps
// back to the target even when two targets share an address.
const targetIndex = "federate.target"

// Tries yields the targets to try for one connection: a pick, and after
// each failed one a new pick among the targets not yet tried, as if the
// failed one had been ejected. It stops when no target may take traffic.
func (p *Picker) Tries() iter.Seq[*agentpb.Target] {
	return func(yield func(*agentpb.Target) bool) {
		pk := p.first
		tried := make(map[int]bool)
		for len(tried) < len(p.targets) {
			e, ok := pk.Pick()
			if !ok {
				return
			}
			i, _ := strconv.Atoi(e.Labels[targetIndex])
			if !yield(p.targets[i]) {
				return
			}
			tried[i] = true
			next := p.base
			next.Groups = groups(p.targets, p.port, tried)
			pk = locality.NewPicker(next)
		}
	}
}

// Shares is the fraction of first picks each target address:port gets.
func (p *Picker) Shares() map[string]float64 { return p.first.Shares() }
