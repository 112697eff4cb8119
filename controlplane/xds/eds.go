package xds

import (
	"fmt"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry/registrypb"
)

// LoadAssignment renders a client's priorities as a ClusterLoadAssignment
// that Envoy and proxyless gRPC both accept: every locality has an explicit
// weight (gRPC ignores localities without one), priorities are contiguous
// from 0, no address repeats, every endpoint has a weight of at least 1,
// and unhealthy endpoints are listed as UNHEALTHY so that Envoy's
// spill-over sees partial health. The overprovisioning factor is left to
// its default (1.4), as Istio leaves it.
func LoadAssignment(name string, p locality.Priorities) (*endpointpb.ClusterLoadAssignment, error) {
	cla := &endpointpb.ClusterLoadAssignment{ClusterName: name}
	for _, g := range p.Groups {
		group := &endpointpb.LocalityLbEndpoints{
			Locality:            &corepb.Locality{Region: g.Locality.Region, Zone: g.Locality.Zone, SubZone: g.Locality.Subzone},
			Priority:            g.Priority,
			LoadBalancingWeight: wrapperspb.UInt32(max(g.Weight, 1)),
		}
		for _, e := range g.Endpoints {
			group.LbEndpoints = append(group.LbEndpoints, &endpointpb.LbEndpoint{
				HostIdentifier: &endpointpb.LbEndpoint_Endpoint{Endpoint: &endpointpb.Endpoint{
					Address: &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
						Address: e.Address, PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: e.Port},
					}}},
				}},
				HealthStatus:        healthStatus(e.Health),
				LoadBalancingWeight: wrapperspb.UInt32(max(e.Weight, 1)),
			})
		}
		cla.Endpoints = append(cla.Endpoints, group)
	}
	if err := CheckLoadAssignment(cla); err != nil {
		return nil, err
	}
	return cla, nil
}

func healthStatus(h registrypb.Health) corepb.HealthStatus {
	switch h {
	case registrypb.Health_HEALTHY:
		return corepb.HealthStatus_HEALTHY
	case registrypb.Health_UNHEALTHY:
		return corepb.HealthStatus_UNHEALTHY
	}
	return corepb.HealthStatus_UNKNOWN
}

// CheckLoadAssignment applies Envoy's validation and the rules grpc-go
// NACKs on (its xdsresource EDS unmarshalling), so that a bad assignment
// is caught before it is published rather than rejected by every client.
func CheckLoadAssignment(cla *endpointpb.ClusterLoadAssignment) error {
	if err := cla.ValidateAll(); err != nil {
		return fmt.Errorf("xds: invalid ClusterLoadAssignment %q: %w", cla.GetClusterName(), err)
	}
	type localityKey struct {
		priority              uint32
		region, zone, subzone string
	}
	seenLocality := make(map[localityKey]bool)
	seenAddress := make(map[string]bool)
	maxPriority := -1
	priorities := make(map[uint32]bool)
	for _, g := range cla.GetEndpoints() {
		l := g.GetLocality()
		if l == nil {
			return fmt.Errorf("xds: ClusterLoadAssignment %q: a locality group has no locality", cla.GetClusterName())
		}
		if g.GetLoadBalancingWeight().GetValue() == 0 {
			return fmt.Errorf("xds: ClusterLoadAssignment %q: locality %q has no weight; gRPC would ignore it", cla.GetClusterName(), l.String())
		}
		k := localityKey{g.GetPriority(), l.GetRegion(), l.GetZone(), l.GetSubZone()}
		if seenLocality[k] {
			return fmt.Errorf("xds: ClusterLoadAssignment %q: locality %q appears twice at priority %d", cla.GetClusterName(), l.String(), g.GetPriority())
		}
		seenLocality[k] = true
		priorities[g.GetPriority()] = true
		maxPriority = max(maxPriority, int(g.GetPriority()))
		for _, e := range g.GetLbEndpoints() {
			if e.GetLoadBalancingWeight() != nil && e.GetLoadBalancingWeight().GetValue() == 0 {
				return fmt.Errorf("xds: ClusterLoadAssignment %q: an endpoint has weight 0", cla.GetClusterName())
			}
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			addr := fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue())
			if seenAddress[addr] {
				return fmt.Errorf("xds: ClusterLoadAssignment %q: address %s appears twice; gRPC rejects that", cla.GetClusterName(), addr)
			}
			seenAddress[addr] = true
		}
	}
	if len(priorities) != maxPriority+1 {
		return fmt.Errorf("xds: ClusterLoadAssignment %q: priorities are not contiguous from 0", cla.GetClusterName())
	}
	return nil
}

// ApplyLocalityPolicy sets the cluster fields a locality policy implies, as
// Istio sets them: locality-weighted load balancing when distribute is
// used (Envoy ignores locality weights otherwise), and the healthy panic
// threshold (outlierDetection.minHealthPercent, else Envoy's default).
func ApplyLocalityPolicy(c *clusterpb.Cluster, p locality.Policy) {
	if p.LocalityWeighted() {
		if c.CommonLbConfig == nil {
			c.CommonLbConfig = &clusterpb.Cluster_CommonLbConfig{}
		}
		c.CommonLbConfig.LocalityConfigSpecifier = &clusterpb.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
			LocalityWeightedLbConfig: &clusterpb.Cluster_CommonLbConfig_LocalityWeightedLbConfig{},
		}
	}
	if p.OutlierDetection {
		if c.CommonLbConfig == nil {
			c.CommonLbConfig = &clusterpb.Cluster_CommonLbConfig{}
		}
		c.CommonLbConfig.HealthyPanicThreshold = &typepb.Percent{Value: float64(p.PanicThreshold)}
	}
}
