package xds

import (
	"strings"
	"testing"

	"github.com/federate/federate/eastwest/xdsclient"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry/registrypb"
)

func lbEndpoint(addr string, port uint32, h corepb.HealthStatus, w uint32) *endpointpb.LbEndpoint {
	return &endpointpb.LbEndpoint{
		HostIdentifier: &endpointpb.LbEndpoint_Endpoint{Endpoint: &endpointpb.Endpoint{
			Address: &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
				Address: addr, PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: port},
			}}},
		}},
		HealthStatus:        h,
		LoadBalancingWeight: wrapperspb.UInt32(w),
	}
}

func TestLoadAssignmentFromPolicy(t *testing.T) {
	rules, err := locality.ParseDestinationRules([]byte(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc}
spec:
  host: svc
  trafficPolicy:
    loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}]}}
    outlierDetection: {consecutive5xxErrors: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	endpoints := []locality.Endpoint{
		{Address: "10.0.0.3", Port: 80, Locality: locality.Locality{Region: "r3"}, Health: registrypb.Health_HEALTHY},
		{Address: "10.0.0.2", Port: 80, Locality: locality.Locality{Region: "r2", Zone: "z"}, Health: registrypb.Health_UNHEALTHY, Weight: 3},
		{Address: "10.0.0.1", Port: 80, Locality: locality.Locality{Region: "r1", Zone: "z"}},
		{Address: "10.0.0.4", Port: 80},
	}
	p := locality.Assign(rules[0].Policy("", 0), locality.Client{Locality: locality.Locality{Region: "r1", Zone: "z"}}, endpoints)
	got, err := LoadAssignment("outbound_.80_._.svc", p)
	if err != nil {
		t.Fatal(err)
	}
	want := &endpointpb.ClusterLoadAssignment{
		ClusterName: "outbound_.80_._.svc",
		Endpoints: []*endpointpb.LocalityLbEndpoints{{
			Locality: &corepb.Locality{Region: "r1", Zone: "z"}, Priority: 0, LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints: []*endpointpb.LbEndpoint{lbEndpoint("10.0.0.1", 80, corepb.HealthStatus_UNKNOWN, 1)},
		}, {
			Locality: &corepb.Locality{Region: "r2", Zone: "z"}, Priority: 1, LoadBalancingWeight: wrapperspb.UInt32(3),
			LbEndpoints: []*endpointpb.LbEndpoint{lbEndpoint("10.0.0.2", 80, corepb.HealthStatus_UNHEALTHY, 3)},
		}, {
			// no-locality endpoints are kept, with an explicit empty locality
			Locality: &corepb.Locality{}, Priority: 2, LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints: []*endpointpb.LbEndpoint{lbEndpoint("10.0.0.4", 80, corepb.HealthStatus_UNKNOWN, 1)},
		}, {
			Locality: &corepb.Locality{Region: "r3"}, Priority: 2, LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints: []*endpointpb.LbEndpoint{lbEndpoint("10.0.0.3", 80, corepb.HealthStatus_HEALTHY, 1)},
		}},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("assignment (-want +got):\n%s", diff)
	}
}

func TestCheckLoadAssignmentRejects(t *testing.T) {
	good := func() *endpointpb.ClusterLoadAssignment {
		return &endpointpb.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointpb.LocalityLbEndpoints{{
			Locality: &corepb.Locality{Region: "a"}, LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints: []*endpointpb.LbEndpoint{lbEndpoint("10.0.0.1", 80, corepb.HealthStatus_HEALTHY, 1)},
		}, {
			Locality: &corepb.Locality{Region: "b"}, Priority: 1, LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints: []*endpointpb.LbEndpoint{lbEndpoint("10.0.0.2", 80, corepb.HealthStatus_HEALTHY, 1)},
		}}}
	}
	if err := CheckLoadAssignment(good()); err != nil {
		t.Fatalf("valid assignment rejected: %v", err)
	}
	tests := []struct {
		name   string
		change func(*endpointpb.ClusterLoadAssignment)
		want   string
	}{
		{"priority gap", func(c *endpointpb.ClusterLoadAssignment) { c.Endpoints[1].Priority = 2 }, "not contiguous"},
		{"no priority 0", func(c *endpointpb.ClusterLoadAssignment) { c.Endpoints[0].Priority = 1; c.Endpoints[1].Priority = 2 }, "not contiguous"},
		{"repeated address", func(c *endpointpb.ClusterLoadAssignment) {
			c.Endpoints[1].LbEndpoints[0] = lbEndpoint("10.0.0.1", 80, corepb.HealthStatus_HEALTHY, 1)
		}, "appears twice"},
		{"locality without weight", func(c *endpointpb.ClusterLoadAssignment) { c.Endpoints[0].LoadBalancingWeight = nil }, "has no weight"},
		{"missing locality", func(c *endpointpb.ClusterLoadAssignment) { c.Endpoints[0].Locality = nil }, "has no locality"},
		{"locality twice in a priority", func(c *endpointpb.ClusterLoadAssignment) {
			c.Endpoints[1].Priority = 0
			c.Endpoints[1].Locality = &corepb.Locality{Region: "a"}
		}, "appears twice at priority 0"},
		{"endpoint weight 0", func(c *endpointpb.ClusterLoadAssignment) {
			c.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0)
		}, "invalid ClusterLoadAssignment"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cla := good()
			tt.change(cla)
			err := CheckLoadAssignment(cla)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestApplyLocalityPolicy(t *testing.T) {
	c := &clusterpb.Cluster{Name: "c"}
	ApplyLocalityPolicy(c, locality.DefaultPolicy())
	if !proto.Equal(c, &clusterpb.Cluster{Name: "c"}) {
		t.Errorf("default policy changed the cluster: %v", c)
	}
	p := locality.Policy{OutlierDetection: true, PanicThreshold: 20, Distribute: []locality.Distribute{{}}}
	ApplyLocalityPolicy(c, p)
	if c.GetCommonLbConfig().GetLocalityWeightedLbConfig() == nil {
		t.Error("distribute did not turn on locality-weighted load balancing")
	}
	if got := c.GetCommonLbConfig().GetHealthyPanicThreshold().GetValue(); got != 20 {
		t.Errorf("panic threshold %v, want minHealthPercent 20", got)
	}
}

// What a gateway reads back from xDS picks exactly as the priorities that
// produced it: one implementation on both sides.
func TestPrioritiesRoundTrip(t *testing.T) {
	policy := locality.Policy{OutlierDetection: true, PanicThreshold: 0}
	var endpoints []locality.Endpoint
	for i, l := range []string{"r1/z1", "r1/z1", "r1/z1", "r1/z2", "r2/z1"} {
		loc, err := locality.Parse(l)
		if err != nil {
			t.Fatal(err)
		}
		h := registrypb.Health_HEALTHY
		if i < 2 {
			h = registrypb.Health_UNHEALTHY // priority 0 is 1/3 healthy: 46% spills over
		}
		endpoints = append(endpoints, locality.Endpoint{Address: "10.0.0." + string(rune('1'+i)), Port: 80, Locality: loc, Health: h})
	}
	want := locality.Assign(policy, locality.Client{Locality: locality.Locality{Region: "r1", Zone: "z1"}}, endpoints)
	cla, err := LoadAssignment("c", want)
	if err != nil {
		t.Fatal(err)
	}
	c := &clusterpb.Cluster{Name: "c"}
	ApplyLocalityPolicy(c, policy)
	got := xdsclient.PrioritiesFrom(c, cla)
	wantShares, gotShares := locality.NewPicker(want).Shares(), locality.NewPicker(got).Shares()
	if diff := cmp.Diff(wantShares, gotShares); diff != "" {
		t.Errorf("shares after the round trip (-want +got):\n%s", diff)
	}
	// 140*1/3 = 46 percent stays on priority 0's one healthy endpoint.
	if s := gotShares["10.0.0.3:80"]; s < 0.459 || s > 0.461 {
		t.Errorf("priority 0 share %.3f, want 0.46", s)
	}
}
