package xdsclient

import (
	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry/registrypb"
)

// PrioritiesFrom reads back what a gateway or agent received (its cluster
// and ClusterLoadAssignment) so that its in-process locality.Picker uses
// the same math as Envoy: locality weighting and the panic threshold come
// from the cluster, priorities, weights and health from the assignment.
// cluster may be nil.
func PrioritiesFrom(cluster *clusterpb.Cluster, cla *endpointpb.ClusterLoadAssignment) locality.Priorities {
	p := locality.Priorities{
		Overprovisioning: locality.DefaultOverprovisioning,
		PanicThreshold:   locality.DefaultPanicThreshold,
		LocalityWeighted: cluster.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil,
	}
	if t := cluster.GetCommonLbConfig().GetHealthyPanicThreshold(); t != nil {
		p.PanicThreshold = uint32(min(max(t.GetValue(), 0), 100))
	}
	if f := cla.GetPolicy().GetOverprovisioningFactor(); f != nil && f.GetValue() > 0 {
		p.Overprovisioning = f.GetValue()
	}
	for _, g := range cla.GetEndpoints() {
		l := g.GetLocality()
		group := locality.Group{
			Locality: locality.Locality{Region: l.GetRegion(), Zone: l.GetZone(), Subzone: l.GetSubZone()},
			Priority: g.GetPriority(),
			Weight:   g.GetLoadBalancingWeight().GetValue(),
		}
		for _, e := range g.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			h := registrypb.Health_HEALTH_UNKNOWN
			switch e.GetHealthStatus() {
			case corepb.HealthStatus_HEALTHY:
				h = registrypb.Health_HEALTHY
			case corepb.HealthStatus_UNHEALTHY, corepb.HealthStatus_DRAINING, corepb.HealthStatus_TIMEOUT:
				h = registrypb.Health_UNHEALTHY
			}
			group.Endpoints = append(group.Endpoints, locality.Endpoint{
				Address:  sa.GetAddress(),
				Port:     sa.GetPortValue(),
				Locality: group.Locality,
				Health:   h,
				Weight:   max(e.GetLoadBalancingWeight().GetValue(), 1),
			})
		}
		p.Groups = append(p.Groups, group)
	}
	return p
}
