package xds

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routepb "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// ClusterView is one cluster's part of the federation as a control plane
// sees it.
type ClusterView struct {
	Name     string
	Info     *registry.ClusterInfo // nil while unknown
	Services []*registry.Service
}

// ClientsInput is everything the configuration of the clients in one
// cluster (sidecars, proxyless gRPC, VM agents) depends on.
type ClientsInput struct {
	// Version labels the snapshot.
	Version string
	// Cluster, Network and Locality are the clients' own: every client
	// of the cluster gets the same configuration.
	Cluster  string
	Network  string
	Locality locality.Locality
	// Views hold every cluster's services, the clients' own included.
	Views []ClusterView
	// Subsets by service hostname, from DestinationRules.
	Subsets map[string][]Subset
	// Policy returns the locality policy of a (host, subset, port); nil
	// means locality.DefaultPolicy for all.
	Policy func(host, subset string, port uint32) locality.Policy
	// ClusterDown reports a cluster known to be dead: its endpoints are
	// listed UNHEALTHY. GatewayDown reports a remote gateway ("host:port")
	// that fails its probes: the endpoints it stands for are UNHEALTHY.
	// Either may be nil.
	ClusterDown func(cluster string) bool
	GatewayDown func(addr string) bool
	// Reuse, if set, keeps what this build renders for the next one (see
	// Reuse); nil renders everything.
	Reuse *Reuse
}

// ClientWarning is a surprise in the configuration of one service port,
// for status.
type ClientWarning struct {
	Host    string
	Port    uint32
	Subset  string
	Warning locality.Warning
}

// Clients is the client-facing configuration of one cluster.
type Clients struct {
	Snapshot *cachev3.Snapshot
	// Priorities by cluster name, as sent in EDS.
	Priorities map[string]locality.Priorities
	Warnings   []ClientWarning
}

// BuildClients renders the configuration of a cluster's clients: for every
// service port of the federation (and every subset), an API listener
// named "host:port" for proxyless gRPC (target xds:///host:port), an EDS
// cluster named as the service's SNI, and its endpoints: split horizon
// (another network's endpoints are replaced by that cluster's gateways),
// then the locality policy's priorities and weights for the cluster's
// locality. The snapshot is validated and consistent. With in.Reuse, a
// host whose inputs did not change since the last build keeps the
// resources rendered then, unvalidated again and the same messages, so a
// change costs the hosts it touches.
func BuildClients(in ClientsInput) (*Clients, error) {
	if in.Reuse != nil {
		in.Reuse.mu.Lock()
		defer in.Reuse.mu.Unlock()
		in.Reuse.startLocked(in)
	}
	size := 0
	for _, v := range in.Views {
		size += len(v.Services)
	}
	hosts := make(map[string]*hostSources, size)
	views := slices.Clone(in.Views)
	slices.SortFunc(views, func(a, b ClusterView) int { return cmp.Compare(a.Name, b.Name) })
	for _, v := range views {
		down := in.ClusterDown != nil && v.Name != in.Cluster && in.ClusterDown(v.Name)
		for _, svc := range v.Services {
			h := hosts[svc.GetHostname()]
			if h == nil {
				h = &hostSources{}
				hosts[svc.GetHostname()] = h
			}
			h.keys = append(h.keys, sourceKey{cluster: v.Name, info: v.Info, service: svc, down: down})
			for _, p := range svc.GetPorts() {
				h.addPort(p)
			}
		}
	}
	out := &Clients{Priorities: make(map[string]locality.Priorities)}
	var listeners, clusters, endpoints []types.Resource
	for _, host := range sortedKeys(hosts) {
		b := in.Reuse.lookupLocked(in, host, hosts[host])
		if b == nil {
			var err error
			if b, err = buildHost(in, host, hosts[host]); err != nil {
				return nil, err
			}
		}
		in.Reuse.keepLocked(host, b)
		listeners = append(listeners, b.listeners...)
		clusters = append(clusters, b.clusters...)
		endpoints = append(endpoints, b.endpoints...)
		maps.Copy(out.Priorities, b.priorities)
		out.Warnings = append(out.Warnings, b.warnings...)
	}
	snap, err := cachev3.NewSnapshot(in.Version, map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: listeners,
		resourcev3.ClusterType:  clusters,
		resourcev3.EndpointType: endpoints,
	})
	if err != nil {
		return nil, fmt.Errorf("xds: snapshot: %w", err)
	}
	// Every host renders its clusters with their endpoints, so a build
	// that reuses hosts is consistent by construction; one that does not
	// is checked whole, as it always was.
	if in.Reuse == nil {
		if err := snap.Consistent(); err != nil {
			return nil, fmt.Errorf("xds: inconsistent snapshot: %w", err)
		}
	}
	out.Snapshot = snap
	return out, nil
}

// hostSources is every cluster's service of one hostname, and its ports.
type hostSources struct {
	keys  []sourceKey
	ports []*registry.Port // by number, the first of each number seen
}

// addPort keeps the first port of each number, sorted: a service has few,
// so a slice costs less than a map for each of the federation's hosts.
func (h *hostSources) addPort(p *registry.Port) {
	i, found := slices.BinarySearchFunc(h.ports, p.GetNumber(), func(q *registry.Port, n uint32) int { return cmp.Compare(q.GetNumber(), n) })
	if !found {
		h.ports = slices.Insert(h.ports, i, p)
	}
}

// sources are the host's services as clients see them: those of a
// cluster that is down are unhealthy. Made only when the host is
// rendered, since the copies cost what the services hold.
func (h *hostSources) sources() []locality.Source {
	out := make([]locality.Source, len(h.keys))
	for i, k := range h.keys {
		svc := k.service
		if k.down {
			svc = unhealthy(svc)
		}
		out[i] = locality.Source{Cluster: k.cluster, Info: k.info, Service: svc}
	}
	return out
}

// buildHost renders one host's listeners, clusters and endpoints and
// validates them. The policies and gateway states it reads are recorded,
// so that a later build can tell whether they changed.
func buildHost(in ClientsInput, host string, h *hostSources) (*builtHost, error) {
	b := &builtHost{sources: h.keys, subsets: in.Subsets[host], priorities: make(map[string]locality.Priorities)}
	client := locality.Client{Locality: in.Locality, Network: in.Network, Cluster: in.Cluster}
	all := h.sources()
	for _, port := range h.ports {
		number := port.GetNumber()
		for _, sub := range append([]Subset{{}}, in.Subsets[host]...) {
			policy := locality.DefaultPolicy()
			if in.Policy != nil {
				policy = in.Policy(host, sub.Name, number)
			}
			b.policies = append(b.policies, policyRead{subset: sub.Name, port: number, policy: policy})
			sources := subsetSources(all, sub)
			eps, warnings := locality.SplitHorizon(in.Network, port, sources)
			for i := range eps {
				if eps[i].Network != in.Network && in.GatewayDown != nil {
					down := in.GatewayDown(eps[i].HostPort())
					b.gateways = append(b.gateways, gatewayRead{addr: eps[i].HostPort(), down: down})
					if down {
						eps[i].Health = registrypb.Health_UNHEALTHY
					}
				}
			}
			prio := locality.Assign(policy, client, eps)
			name := ClusterName(number, sub.Name, host)
			cla, err := LoadAssignment(name, prio)
			if err != nil {
				return nil, err
			}
			for _, w := range append(warnings, prio.Warnings...) {
				b.warnings = append(b.warnings, ClientWarning{Host: host, Port: number, Subset: sub.Name, Warning: w})
			}
			b.priorities[name] = prio
			c := clientCluster(name)
			ApplyLocalityPolicy(c, policy)
			if c.TransportSocket, err = upstreamTLS(name, spiffeIDs(sources)); err != nil {
				return nil, err
			}
			b.clusters = append(b.clusters, c)
			b.endpoints = append(b.endpoints, cla)
			if sub.Name == "" {
				lis, err := grpcListener(net.JoinHostPort(host, strconv.FormatUint(uint64(number), 10)), name)
				if err != nil {
					return nil, err
				}
				b.listeners = append(b.listeners, lis)
			}
		}
	}
	for typ, list := range map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: b.listeners, resourcev3.ClusterType: b.clusters, resourcev3.EndpointType: b.endpoints,
	} {
		for _, r := range list {
			if err := r.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
				return nil, fmt.Errorf("xds: invalid %s %q: %w", typ, cachev3.GetResourceName(r), err)
			}
		}
	}
	return b, nil
}

func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// unhealthy returns a copy of svc with every endpoint UNHEALTHY.
func unhealthy(svc *registry.Service) *registry.Service {
	c := proto.Clone(svc).(*registry.Service)
	for _, ep := range c.GetEndpoints() {
		ep.Health = registrypb.Health_UNHEALTHY
	}
	return c
}

// subsetSources keeps the endpoints a subset selects.
func subsetSources(sources []locality.Source, sub Subset) []locality.Source {
	if len(sub.Labels) == 0 {
		return sources
	}
	out := make([]locality.Source, len(sources))
	for i, s := range sources {
		svc := proto.Clone(s.Service).(*registry.Service)
		svc.Endpoints = slices.DeleteFunc(svc.Endpoints, func(ep *registry.Endpoint) bool { return !matches(ep.GetLabels(), sub.Labels) })
		s.Service = svc
		out[i] = s
	}
	return out
}

// clientCluster is an EDS cluster over ADS. A client's gets its transport
// security (upstreamTLS) in BuildClients; a gateway's passes TLS through.
func clientCluster(name string) *clusterpb.Cluster {
	return &clusterpb.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterpb.Cluster_Type{Type: clusterpb.Cluster_EDS},
		EdsClusterConfig: &clusterpb.Cluster_EdsClusterConfig{
			EdsConfig: &corepb.ConfigSource{
				ResourceApiVersion:    corepb.ApiVersion_V3,
				ConfigSourceSpecifier: &corepb.ConfigSource_Ads{Ads: &corepb.AggregatedConfigSource{}},
			},
		},
		ConnectTimeout: durationpb.New(connectTimeout),
		LbPolicy:       clusterpb.Cluster_ROUND_ROBIN,
	}
}

// grpcListener is what proxyless gRPC asks for: an HttpConnectionManager
// whose inline route sends everything to cluster, ending with the router
// filter (gRPC NACKs a listener without it).
func grpcListener(name, cluster string) (*listenerpb.Listener, error) {
	router, err := anypb.New(&routerpb.Router{})
	if err != nil {
		return nil, err
	}
	hcm, err := anypb.New(&hcmpb.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmpb.HttpConnectionManager_RouteConfig{RouteConfig: &routepb.RouteConfiguration{
			Name: name,
			VirtualHosts: []*routepb.VirtualHost{{
				Name: name, Domains: []string{"*"},
				Routes: []*routepb.Route{{
					Match:  &routepb.RouteMatch{PathSpecifier: &routepb.RouteMatch_Prefix{Prefix: ""}},
					Action: &routepb.Route_Route{Route: &routepb.RouteAction{ClusterSpecifier: &routepb.RouteAction_Cluster{Cluster: cluster}}},
				}},
			}},
		}},
		HttpFilters: []*hcmpb.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmpb.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		return nil, err
	}
	return &listenerpb.Listener{Name: name, ApiListener: &listenerpb.ApiListener{ApiListener: hcm}}, nil
}
