package locality

import (
	"cmp"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/federate/federate/registry/registrypb"
)

// Endpoint is one address a client may send to, with what the policy
// looks at.
type Endpoint struct {
	Address  string // IP or host name
	Port     uint32
	Locality Locality
	Network  string
	Cluster  string
	Labels   map[string]string
	Health   registrypb.Health
	// Weight is the endpoint's load-balancing weight; 0 means 1.
	Weight uint32
}

// HostPort is "address:port".
func (e *Endpoint) HostPort() string {
	return net.JoinHostPort(e.Address, strconv.FormatUint(uint64(e.Port), 10))
}

func (e *Endpoint) weight() uint32 { return max(e.Weight, 1) }

// Client is who the priorities are computed for.
type Client struct {
	Locality Locality
	Network  string
	Cluster  string
	Labels   map[string]string
}

// Group is the endpoints of one locality at one priority, as one EDS
// LocalityLbEndpoints.
type Group struct {
	Locality  Locality
	Priority  uint32
	Weight    uint32 // at least 1: gRPC ignores localities without a weight
	Endpoints []Endpoint
}

// Priorities is what Assign computes for one client: groups ordered by
// priority, then locality, with priorities contiguous from 0 and no
// address repeated.
type Priorities struct {
	Groups []Group
	// LocalityWeighted tells Envoy to honour locality weights (distribute).
	LocalityWeighted bool
	// PanicThreshold and Overprovisioning drive the spill-over math.
	PanicThreshold   uint32
	Overprovisioning uint32
	// Warnings explain endpoints this client will not use and why.
	Warnings []Warning
}

// Levels returns the number of priorities.
func (p Priorities) Levels() int {
	if len(p.Groups) == 0 {
		return 0
	}
	return int(p.Groups[len(p.Groups)-1].Priority) + 1
}

// Assign groups endpoints by locality and gives each group a priority and
// a weight, exactly as Istio's loadbalancer package does for a proxy with
// the client's locality and labels (then Envoy's rules apply to the
// result). Two deliberate differences, both reported as warnings: if
// distribute would drop every endpoint, nothing is dropped; and a repeated
// address is kept once, at its best priority.
func Assign(policy Policy, client Client, endpoints []Endpoint) Priorities {
	out := Priorities{PanicThreshold: policy.PanicThreshold, Overprovisioning: DefaultOverprovisioning}
	groups := byLocality(endpoints)
	switch {
	case policy.Disabled:
	case len(policy.Distribute) > 0:
		out.LocalityWeighted = true
		groups, out.Warnings = distribute(policy.Distribute, client.Locality, groups)
	case policy.OutlierDetection:
		if len(policy.FailoverPriority) > 0 {
			labels := topologyLabels(client.Labels, client.Locality, client.Network, client.Cluster)
			groups = failoverPriority(policy.FailoverPriority, labels, groups)
			if len(policy.Failover) > 0 {
				groups = failover(policy.Failover, client.Locality, groups)
			}
		} else {
			groups = failover(policy.Failover, client.Locality, groups)
		}
	}
	groups, dups := dedupe(groups)
	out.Warnings = append(out.Warnings, dups...)
	out.Groups = compact(groups)
	return out
}

// byLocality groups endpoints per locality, sorted by locality, each group
// weighted by the sum of its endpoint weights (Istio's refreshWeight).
func byLocality(endpoints []Endpoint) []Group {
	index := make(map[Locality]int)
	var groups []Group
	for _, e := range endpoints {
		e.Weight = e.weight()
		i, ok := index[e.Locality]
		if !ok {
			i = len(groups)
			index[e.Locality] = i
			groups = append(groups, Group{Locality: e.Locality})
		}
		groups[i].Endpoints = append(groups[i].Endpoints, e)
		groups[i].Weight = satAdd(groups[i].Weight, e.Weight)
	}
	slices.SortStableFunc(groups, func(a, b Group) int { return cmp.Compare(a.Locality.String(), b.Locality.String()) })
	return groups
}

func satAdd(a, b uint32) uint32 {
	if a > math.MaxUint32-b {
		return math.MaxUint32
	}
	return a + b
}

// distribute applies the first rule whose from matches the client (Istio's
// applyLocalityWeights): each to weight is spread over the groups it
// matches in proportion to their weight, rounded up; groups no to matches
// lose their endpoints.
func distribute(rules []Distribute, client Locality, groups []Group) ([]Group, []Warning) {
	for _, rule := range rules {
		if !rule.From.Match(client) {
			continue
		}
		assigned := make([]bool, len(groups))
		for _, to := range rule.To {
			var total uint64
			var members []int
			for i, g := range groups {
				if !assigned[i] && to.Pattern.Match(g.Locality) {
					assigned[i] = true
					members = append(members, i)
					total += uint64(g.Weight)
				}
			}
			for _, i := range members {
				w := math.Ceil(float64(uint64(groups[i].Weight)*uint64(to.Weight)) / float64(total))
				groups[i].Weight = uint32(min(w, math.MaxUint32))
			}
		}
		var kept []Group
		var dropped []string
		for i, g := range groups {
			if assigned[i] {
				kept = append(kept, g)
				continue
			}
			name := g.Locality.String()
			if name == "" {
				name = "(no locality)"
			}
			dropped = append(dropped, fmt.Sprintf("%s (%d endpoints)", name, len(g.Endpoints)))
		}
		if len(kept) == 0 {
			return groups, []Warning{{Field: "distribute", Message: fmt.Sprintf(
				"no to pattern of the rule from %q matches any endpoint; every endpoint is kept so that the service stays reachable (Istio would send no traffic)", rule.From)}}
		}
		if len(dropped) > 0 {
			return kept, []Warning{{Field: "distribute", Message: fmt.Sprintf(
				"clients in %q send no traffic to %s: no to pattern matches them (Istio drops them too)", rule.From, strings.Join(dropped, ", "))}}
		}
		return kept, nil
	}
	return groups, nil
}

// failover sets Istio's locality priorities (applyLocalityFailover):
// 0 same subzone, 1 same zone, 2 same region, 3 another region, 4 another
// region when the client's region fails over elsewhere. Priorities from
// failoverPriority are kept as the major key (old*5 + new).
func failover(rules []Failover, client Locality, groups []Group) []Group {
	for i := range groups {
		p := Relate(client, groups[i].Locality)
		if p == OtherRegion {
			for _, f := range rules {
				if f.From == client.Region {
					if groups[i].Locality.Region != f.To {
						p = NotFailoverPeer
					}
					break
				}
			}
		}
		groups[i].Priority = groups[i].Priority*5 + uint32(p)
	}
	return groups
}

// failoverPriority splits each locality group by how many of the ordered
// labels an endpoint shares with the client (Istio's
// applyFailoverPriorityPerLocality): all match is 0, a mismatch at label j
// of n is n-j. When the first label is the network, a network mismatch
// adds n instead of ending the match.
func failoverPriority(labels []PriorityLabel, client map[string]string, groups []Group) []Group {
	if len(client) == 0 {
		return groups // Istio skips failoverPriority for a proxy without labels
	}
	n := uint32(len(labels))
	var out []Group
	for _, g := range groups {
		byPriority := make(map[uint32]*Group)
		var order []uint32
		for _, e := range g.Endpoints {
			el := topologyLabels(e.Labels, e.Locality, e.Network, e.Cluster)
			var p uint32
			start := 0
			if labels[0].Key == LabelNetwork && !labels[0].HasValue {
				if client[LabelNetwork] != el[LabelNetwork] {
					p = n
				}
				start = 1
			}
			for j := start; j < len(labels); j++ {
				want := client[labels[j].Key]
				if labels[j].HasValue {
					want = labels[j].Value
				}
				// A label missing on both sides matches, as in Istio.
				if el[labels[j].Key] != want {
					p += n - uint32(j)
					break
				}
			}
			sub := byPriority[p]
			if sub == nil {
				sub = &Group{Locality: g.Locality, Priority: p}
				byPriority[p] = sub
				order = append(order, p)
			}
			sub.Endpoints = append(sub.Endpoints, e)
			sub.Weight = satAdd(sub.Weight, e.Weight)
		}
		slices.Sort(order)
		for _, p := range order {
			out = append(out, *byPriority[p])
		}
	}
	return out
}

// topologyLabels adds the special labels Istio derives from topology, as
// its AugmentLabels does for both proxies and endpoints.
func topologyLabels(labels map[string]string, l Locality, network, cluster string) map[string]string {
	out := make(map[string]string, len(labels)+5)
	for k, v := range labels {
		out[k] = v
	}
	set := func(k, v string) {
		if v != "" {
			out[k] = v
		}
	}
	set(LabelRegion, l.Region)
	set(LabelZone, l.Zone)
	set(LabelSubzone, l.Subzone)
	set(LabelNetwork, network)
	set(LabelCluster, cluster)
	return out
}

// dedupe keeps each address once, in its best priority: gRPC rejects a
// ClusterLoadAssignment that repeats an address.
func dedupe(groups []Group) ([]Group, []Warning) {
	slices.SortStableFunc(groups, func(a, b Group) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Locality.String(), b.Locality.String()))
	})
	seen := make(map[string]bool)
	var warnings []Warning
	out := groups[:0]
	for _, g := range groups {
		kept := g.Endpoints[:0:0]
		var keptWeight, allWeight uint64
		for _, e := range g.Endpoints {
			allWeight += uint64(e.Weight)
			hp := e.HostPort()
			if seen[hp] {
				warnings = append(warnings, Warning{Message: fmt.Sprintf("address %s is listed more than once; only its first entry is used", hp)})
				continue
			}
			seen[hp] = true
			kept = append(kept, e)
			keptWeight += uint64(e.Weight)
		}
		if len(kept) == 0 {
			continue
		}
		if keptWeight < allWeight {
			g.Weight = uint32(min(math.Ceil(float64(g.Weight)*float64(keptWeight)/float64(allWeight)), math.MaxUint32))
		}
		g.Endpoints = kept
		g.Weight = max(g.Weight, 1)
		out = append(out, g)
	}
	return out, warnings
}

// compact renumbers priorities 0..N without gaps (Envoy and gRPC need
// that); groups are already sorted by priority.
func compact(groups []Group) []Group {
	var prev, next uint32
	for i := range groups {
		orig := groups[i].Priority
		if i > 0 && orig != prev {
			next++
		}
		prev = orig
		groups[i].Priority = next
	}
	return groups
}
