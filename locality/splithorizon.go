package locality

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// DefaultGatewayPort is the east-west gateway port when a gateway names
// none (Istio's 15443).
const DefaultGatewayPort = 15443

// Source is one cluster's copy of a service, with what that cluster says
// about itself (its network and gateways).
type Source struct {
	Cluster string
	Info    *registry.ClusterInfo // nil when the cluster's info is not known yet
	Service *registry.Service
}

// SplitHorizon lists the endpoints a client on network sees for one
// service port (Istio's split-horizon EDS). Endpoints on the client's
// network, or with no network, are used directly. Endpoints on another
// network are replaced, per locality, by their cluster's gateways on that
// network (or any gateway on it when the cluster has none), weighted by
// the endpoints behind them; the gateway endpoint keeps the locality it
// stands for. Endpoints with no locality are kept like any other. No
// address is repeated: a gateway stands for one locality only, the one
// whose endpoints it is closest to (by the gateway's own locality, then
// by weight), and a locality left without a gateway is counted under the
// closest locality that has one. Endpoints that cannot be reached (their
// network has no gateway) are left out with a warning.
func SplitHorizon(network string, port *registry.Port, sources []Source) ([]Endpoint, []Warning) {
	gatewaysByNetwork := make(map[string][]*registry.Gateway)
	for _, s := range sources {
		for _, g := range s.Info.GetGateways() {
			net := cmp.Or(g.GetNetwork(), s.Info.GetNetwork())
			gatewaysByNetwork[net] = append(gatewaysByNetwork[net], g)
		}
	}
	var (
		local    []Endpoint
		remote   []remoteSet
		warnings []Warning
	)
	for _, s := range sources {
		byNet := make(map[string][]Endpoint)
		for _, ep := range s.Service.GetEndpoints() {
			e := fromRegistry(s, ep, port)
			if e.Network == "" || e.Network == network {
				local = append(local, e)
				continue
			}
			byNet[e.Network] = append(byNet[e.Network], e)
		}
		for _, net := range slices.Sorted(maps.Keys(byNet)) {
			gws := ownGateways(s, net)
			if len(gws) == 0 {
				gws = gatewaysByNetwork[net]
			}
			if len(gws) == 0 {
				warnings = append(warnings, Warning{Message: fmt.Sprintf(
					"service %s: %d endpoints of cluster %s on network %s are unreachable from network %s: no gateway is known for network %s",
					s.Service.GetHostname(), len(byNet[net]), s.Cluster, net, network, net)})
				continue
			}
			remote = append(remote, remoteSet{source: s, network: net, gateways: gws, endpoints: byNet[net]})
		}
	}
	gateways, ws := throughGateways(remote)
	warnings = append(warnings, ws...)

	// Scale every weight so that splitting a locality's weight over its
	// gateways stays exact in integers (Istio's LCM scale factor).
	scale := uint64(1)
	for _, g := range gateways {
		if next := lcm(scale, g.share); next <= maxScale {
			scale = next
		}
	}
	out := make([]Endpoint, 0, len(local)+len(gateways))
	index := make(map[string]int)
	for _, e := range local {
		hp := e.HostPort()
		if _, dup := index[hp]; dup {
			warnings = append(warnings, Warning{Message: fmt.Sprintf("address %s is listed by more than one endpoint; only the first is used", hp)})
			continue
		}
		index[hp] = len(out)
		e.Weight = saturate(uint64(e.weight()) * scale)
		out = append(out, e)
	}
	for _, g := range gateways {
		e := g.endpoint
		e.Weight = saturate((g.behind*scale + g.share - 1) / g.share)
		hp := e.HostPort()
		i, dup := index[hp]
		switch {
		case !dup:
			index[hp] = len(out)
			out = append(out, e)
		case out[i].Network == e.Network && out[i].Network != network:
			// Clusters sharing a gateway: it stands for all of them.
			out[i].Weight = saturate(uint64(out[i].Weight) + uint64(e.Weight))
			if e.Health == registrypb.Health_HEALTHY || out[i].Health == registrypb.Health_UNHEALTHY {
				out[i].Health = e.Health
			}
		default:
			warnings = append(warnings, Warning{Message: fmt.Sprintf("gateway address %s is also listed as an endpoint; only the endpoint is used", hp)})
		}
	}
	return out, warnings
}

func saturate(v uint64) uint32 { return uint32(max(1, min(v, 1<<32-1))) }

func fromRegistry(s Source, ep *registry.Endpoint, port *registry.Port) Endpoint {
	target := ep.GetPorts()[port.GetName()]
	if target == 0 {
		target = port.GetNumber()
	}
	return Endpoint{
		Address:  ep.GetAddress(),
		Port:     target,
		Locality: FromProto(ep.GetLocality()),
		Network:  cmp.Or(ep.GetNetwork(), s.Info.GetNetwork()),
		Cluster:  s.Cluster,
		Labels:   ep.GetLabels(),
		Health:   ep.GetHealth(),
		Weight:   ep.GetWeight(),
	}
}

func ownGateways(s Source, network string) []*registry.Gateway {
	var out []*registry.Gateway
	for _, g := range s.Info.GetGateways() {
		if cmp.Or(g.GetNetwork(), s.Info.GetNetwork()) == network {
			out = append(out, g)
		}
	}
	return out
}

// remoteSet is one cluster's endpoints on one remote network and the
// gateways that reach them.
type remoteSet struct {
	source    Source
	network   string
	gateways  []*registry.Gateway
	endpoints []Endpoint
}

// gatewayEndpoint is one gateway standing for the endpoints behind it;
// their weight is shared by share gateways.
type gatewayEndpoint struct {
	endpoint Endpoint
	behind   uint64
	share    uint64
}

// maxScale bounds the scale factor; beyond it weights are rounded up.
const maxScale = 5040

func throughGateways(sets []remoteSet) ([]gatewayEndpoint, []Warning) {
	var out []gatewayEndpoint
	var warnings []Warning
	for _, set := range sets {
		groups := byLocality(set.endpoints)
		gwsOf := make([][]*registry.Gateway, len(groups))
		for _, gw := range set.gateways {
			best := closest(FromProto(gw.GetLocality()), groups, func(int) bool { return true })
			gwsOf[best] = append(gwsOf[best], gw)
		}
		members := make([][]Endpoint, len(groups))
		for i, g := range groups {
			target := i
			if len(gwsOf[i]) == 0 {
				target = closest(g.Locality, groups, func(j int) bool { return len(gwsOf[j]) > 0 })
				warnings = append(warnings, Warning{Message: fmt.Sprintf(
					"service %s: cluster %s has no gateway of its own for locality %q; its %d endpoints are reached through the gateways of locality %q",
					set.source.Service.GetHostname(), set.source.Cluster, g.Locality, len(g.Endpoints), groups[target].Locality)})
			}
			members[target] = append(members[target], g.Endpoints...)
		}
		for i, g := range groups {
			if len(gwsOf[i]) == 0 {
				continue
			}
			behind, health, labels := summarize(members[i])
			for _, gw := range gwsOf[i] {
				out = append(out, gatewayEndpoint{
					endpoint: Endpoint{
						Address:  gw.GetAddress(),
						Port:     cmp.Or(gw.GetPort(), DefaultGatewayPort),
						Locality: g.Locality,
						Network:  set.network,
						Cluster:  set.source.Cluster,
						Labels:   labels,
						Health:   health,
					},
					behind: behind,
					share:  uint64(len(gwsOf[i])),
				})
			}
		}
	}
	return out, warnings
}

// closest returns the index of the allowed group whose locality is closest
// to l, preferring more weight, then the first.
func closest(l Locality, groups []Group, allowed func(int) bool) int {
	best := -1
	for i, g := range groups {
		if !allowed(i) {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		ri, rb := Relate(l, g.Locality), Relate(l, groups[best].Locality)
		if l.IsZero() {
			ri, rb = 0, 0
		}
		if ri < rb || ri == rb && g.Weight > groups[best].Weight {
			best = i
		}
	}
	return best
}

// summarize weighs the endpoints behind a gateway: usable ones count when
// there are any; the gateway is healthy if any endpoint is, unhealthy if
// all are; it carries the labels they all share.
func summarize(eps []Endpoint) (weight uint64, health registrypb.Health, labels map[string]string) {
	var usableWeight, allWeight uint64
	healthy, anyUsable := false, false
	for i, e := range eps {
		allWeight += uint64(e.weight())
		if usable(e.Health) {
			anyUsable = true
			usableWeight += uint64(e.weight())
		}
		healthy = healthy || e.Health == registrypb.Health_HEALTHY
		if i == 0 {
			labels = maps.Clone(e.Labels)
			continue
		}
		maps.DeleteFunc(labels, func(k, v string) bool { return e.Labels[k] != v })
	}
	switch {
	case healthy:
		health = registrypb.Health_HEALTHY
	case !anyUsable:
		health = registrypb.Health_UNHEALTHY
	}
	if anyUsable {
		return usableWeight, health, labels
	}
	return allWeight, health, labels
}

func lcm(a, b uint64) uint64 {
	x, y := a, b
	for y != 0 {
		x, y = y, x%y
	}
	return a / x * b
}
