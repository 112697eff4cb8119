package xds

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpproxypb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
)

// Gateway defaults.
const (
	// ListenerName names the passthrough listener.
	ListenerName = "eastwest_passthrough"
	// DefaultPort is Istio's east-west gateway port.
	DefaultPort    = 15443
	connectTimeout = time.Second
)

// Subset is a named subset of a service's endpoints (a DestinationRule
// subset): the endpoints whose labels include Labels.
type Subset struct {
	Name   string
	Labels map[string]string
}

// Input is everything a gateway's configuration depends on.
type Input struct {
	// Version labels the snapshot; equal inputs should get equal versions.
	Version string
	// Network is the gateway's network: only endpoints on it are routed to.
	Network string
	// Port is the listener port (default DefaultPort).
	Port uint32
	// Services are the exported services of the gateway's cluster.
	Services []*registry.Service
	// Subsets by service hostname.
	Subsets map[string][]Subset
	// Cluster is the gateway's cluster. The internal names of its
	// components (sni.Internal) route to the addresses in Internal, so that
	// peers and VM agents reach the control plane through the gateway.
	Cluster  string
	Internal map[sni.Component]string
	// Locality is the gateway's own: endpoints closer to it get a better
	// priority, as for any client.
	Locality locality.Locality
	// Policy returns the locality policy of a (host, subset, port), from
	// its DestinationRule; nil means GatewayPolicy for all.
	Policy func(host, subset string, port uint32) locality.Policy
	// Reuse, if set, keeps what this build renders for the next one (see
	// GatewayReuse); nil renders everything.
	Reuse *GatewayReuse
}

// GatewayPolicy is the policy of a service without a DestinationRule, as
// the gateway applies it: the mesh default, with outlier detection on,
// since every gateway cluster ejects endpoints that refuse connections.
// So the gateway prefers endpoints in its own locality while they are
// healthy.
func GatewayPolicy() locality.Policy {
	p := locality.DefaultPolicy()
	p.OutlierDetection = true
	return p
}

// ClusterName is Istio's SNI for a service port and subset,
// outbound_.<port>_.<subset>_.<host>, used as the cluster name too.
func ClusterName(port uint32, subset, host string) string {
	return sni.Istio{Port: uint16(port), Subset: subset, Host: host}.String()
}

// Build renders the gateway's snapshot. Every resource is validated, and
// the snapshot is checked for consistency, before it is returned.
func Build(in Input) (*cachev3.Snapshot, error) {
	port := in.Port
	if port == 0 {
		port = DefaultPort
	}
	var (
		chains    []*listenerpb.FilterChain
		clusters  []types.Resource
		endpoints []types.Resource
	)
	services := append([]*registry.Service(nil), in.Services...)
	sort.Slice(services, func(i, j int) bool { return services[i].GetHostname() < services[j].GetHostname() })
	if in.Reuse != nil {
		in.Reuse.mu.Lock()
		defer in.Reuse.mu.Unlock()
		in.Reuse.startLocked(in)
	}
	for _, svc := range services {
		b := in.Reuse.lookupLocked(in, svc)
		if b == nil {
			var err error
			if b, err = buildService(in, svc); err != nil {
				return nil, err
			}
		}
		in.Reuse.keepLocked(svc.GetHostname(), b)
		chains = append(chains, b.chains...)
		clusters = append(clusters, b.clusters...)
		endpoints = append(endpoints, b.endpoints...)
	}
	// The services' clusters and assignments were validated when built;
	// the rest is validated below.
	validate := []types.Resource{}
	components := make([]sni.Component, 0, len(in.Internal))
	for c := range in.Internal {
		components = append(components, c)
	}
	sort.Slice(components, func(i, j int) bool { return components[i] < components[j] })
	for _, c := range components {
		name := sni.Internal(c, in.Cluster)
		cla, err := internalAssignment(name, in.Internal[c])
		if err != nil {
			return nil, err
		}
		chain, err := filterChain(name)
		if err != nil {
			return nil, err
		}
		internalCluster := cluster(name)
		chains = append(chains, chain)
		clusters = append(clusters, internalCluster)
		endpoints = append(endpoints, cla)
		validate = append(validate, internalCluster, cla)
	}
	lis, err := listener(port, chains)
	if err != nil {
		return nil, err
	}
	if err := validateAll(append(validate, lis)); err != nil {
		return nil, err
	}
	snap, err := cachev3.NewSnapshot(in.Version, map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {lis},
		resourcev3.ClusterType:  clusters,
		resourcev3.EndpointType: endpoints,
	})
	if err != nil {
		return nil, fmt.Errorf("xds: snapshot: %w", err)
	}
	// Every service renders its clusters with their assignments, so a
	// build that reuses services is consistent by construction.
	if in.Reuse == nil {
		if err := snap.Consistent(); err != nil {
			return nil, fmt.Errorf("xds: inconsistent snapshot: %w", err)
		}
	}
	return snap, nil
}

// validateAll applies every resource's generated validation.
func validateAll(resources []types.Resource) error {
	for _, r := range resources {
		v, ok := r.(interface{ ValidateAll() error })
		if !ok {
			continue
		}
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("xds: invalid %T %q: %w", r, cachev3.GetResourceName(r), err)
		}
	}
	return nil
}

func listener(port uint32, chains []*listenerpb.FilterChain) (*listenerpb.Listener, error) {
	inspector, err := anypb.New(&tlsinspectorpb.TlsInspector{})
	if err != nil {
		return nil, err
	}
	return &listenerpb.Listener{
		Name: ListenerName,
		Address: &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: port},
		}}},
		ListenerFilters: []*listenerpb.ListenerFilter{{
			Name:       "envoy.filters.listener.tls_inspector",
			ConfigType: &listenerpb.ListenerFilter_TypedConfig{TypedConfig: inspector},
		}},
		// No default chain: an SNI that matches no chain is refused.
		FilterChains: chains,
	}, nil
}

func filterChain(name string) (*listenerpb.FilterChain, error) {
	proxy, err := anypb.New(&tcpproxypb.TcpProxy{
		StatPrefix:       name,
		ClusterSpecifier: &tcpproxypb.TcpProxy_Cluster{Cluster: name},
	})
	if err != nil {
		return nil, err
	}
	return &listenerpb.FilterChain{
		Name:             name,
		FilterChainMatch: &listenerpb.FilterChainMatch{ServerNames: []string{name}},
		Filters: []*listenerpb.Filter{{
			Name:       "envoy.filters.network.tcp_proxy",
			ConfigType: &listenerpb.Filter_TypedConfig{TypedConfig: proxy},
		}},
	}, nil
}

// cluster is the gateway's EDS cluster: a client's, plus ejection of an
// endpoint that refuses connections, since the gateway retries the connect
// on another.
func cluster(name string) *clusterpb.Cluster {
	c := clientCluster(name)
	c.OutlierDetection = &clusterpb.OutlierDetection{
		SplitExternalLocalOriginErrors:         true,
		ConsecutiveLocalOriginFailure:          wrapperspb.UInt32(3),
		EnforcingConsecutiveLocalOriginFailure: wrapperspb.UInt32(100),
		BaseEjectionTime:                       durationpb.New(10 * time.Second),
	}
	return c
}

// ownEndpoints lists the service's endpoints on the gateway's network
// that belong to the subset.
func ownEndpoints(network, cluster string, svc *registry.Service, port *registry.Port, sub Subset) []locality.Endpoint {
	var out []locality.Endpoint
	for _, ep := range svc.GetEndpoints() {
		if ep.GetNetwork() != network || !matches(ep.GetLabels(), sub.Labels) {
			continue
		}
		target := ep.GetPorts()[port.GetName()]
		if target == 0 {
			target = port.GetNumber()
		}
		out = append(out, locality.Endpoint{
			Address: ep.GetAddress(), Port: target, Locality: locality.FromProto(ep.GetLocality()),
			Network: network, Cluster: cluster, Labels: ep.GetLabels(), Health: ep.GetHealth(), Weight: ep.GetWeight(),
		})
	}
	return out
}

func matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// internalAssignment is the one local endpoint behind an internal name.
func internalAssignment(name, addr string) (*endpointpb.ClusterLoadAssignment, error) {
	host, portStr, err := net.SplitHostPort(addr)
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil || host == "" || port == 0 {
		return nil, fmt.Errorf("xds: address %q of %s: want host:port", addr, name)
	}
	return &endpointpb.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpointpb.LocalityLbEndpoints{{
			LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints: []*endpointpb.LbEndpoint{{
				HostIdentifier: &endpointpb.LbEndpoint_Endpoint{Endpoint: &endpointpb.Endpoint{
					Address: &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
						Address: host, PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: uint32(port)},
					}}},
				}},
				LoadBalancingWeight: wrapperspb.UInt32(1),
			}},
		}},
	}, nil
}
