package xds

import (
	"cmp"
	"fmt"
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
// locality. The snapshot is validated and consistent.
func BuildClients(in ClientsInput) (*Clients, error) {
	type hostPorts struct {
		sources []locality.Source
		ports   map[uint32]*registry.Port
	}
	hosts := make(map[string]*hostPorts)
	views := slices.Clone(in.Views)
	slices.SortFunc(views, func(a, b ClusterView) int { return cmp.Compare(a.Name, b.Name) })
	for _, v := range views {
		down := in.ClusterDown != nil && v.Name != in.Cluster && in.ClusterDown(v.Name)
		for _, svc := range v.Services {
			if down {
				svc = unhealthy(svc)
			}
			h := hosts[svc.GetHostname()]
			if h == nil {
				h = &hostPorts{ports: make(map[uint32]*registry.Port)}
				hosts[svc.GetHostname()] = h
			}
			h.sources = append(h.sources, locality.Source{Cluster: v.Name, Info: v.Info, Service: svc})
			for _, p := range svc.GetPorts() {
				if _, ok := h.ports[p.GetNumber()]; !ok {
					h.ports[p.GetNumber()] = p
				}
			}
		}
	}
	out := &Clients{Priorities: make(map[string]locality.Priorities)}
	var listeners, clusters, endpoints []types.Resource
	client := locality.Client{Locality: in.Locality, Network: in.Network, Cluster: in.Cluster}
	for _, host := range sortedKeys(hosts) {
		h := hosts[host]
		for _, number := range sortedKeys(h.ports) {
			port := h.ports[number]
			for _, sub := range append([]Subset{{}}, in.Subsets[host]...) {
				policy := locality.DefaultPolicy()
				if in.Policy != nil {
					policy = in.Policy(host, sub.Name, number)
				}
				sources := subsetSources(h.sources, sub)
				eps, warnings := locality.SplitHorizon(in.Network, port, sources)
				for i := range eps {
					if eps[i].Network != in.Network && in.GatewayDown != nil && in.GatewayDown(eps[i].HostPort()) {
						eps[i].Health = registrypb.Health_UNHEALTHY
					}
				}
				prio := locality.Assign(policy, client, eps)
				name := ClusterName(number, sub.Name, host)
				cla, err := LoadAssignment(name, prio)
				if err != nil {
					return nil, err
				}
				for _, w := range append(warnings, prio.Warnings...) {
					out.Warnings = append(out.Warnings, ClientWarning{Host: host, Port: number, Subset: sub.Name, Warning: w})
				}
				out.Priorities[name] = prio
				c := clientCluster(name)
				ApplyLocalityPolicy(c, policy)
				if c.TransportSocket, err = upstreamTLS(name, spiffeIDs(sources)); err != nil {
					return nil, err
				}
				clusters = append(clusters, c)
				endpoints = append(endpoints, cla)
				if sub.Name == "" {
					lis, err := grpcListener(net.JoinHostPort(host, strconv.FormatUint(uint64(number), 10)), name)
					if err != nil {
						return nil, err
					}
					listeners = append(listeners, lis)
				}
			}
		}
	}
	resources := map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: listeners,
		resourcev3.ClusterType:  clusters,
		resourcev3.EndpointType: endpoints,
	}
	for typ, list := range resources {
		for _, r := range list {
			if err := r.(interface{ ValidateAll() error }).ValidateAll(); err != nil {
				return nil, fmt.Errorf("xds: invalid %s %q: %w", typ, cachev3.GetResourceName(r), err)
			}
		}
	}
	snap, err := cachev3.NewSnapshot(in.Version, resources)
	if err != nil {
		return nil, fmt.Errorf("xds: snapshot: %w", err)
	}
	if err := snap.Consistent(); err != nil {
		return nil, fmt.Errorf("xds: inconsistent snapshot: %w", err)
	}
	out.Snapshot = snap
	return out, nil
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
