package xdsclient

import (
	"slices"
	"testing"

	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// The gateway's routes follow the locality priorities of its snapshot:
// the endpoint in the gateway's own zone takes every connection while it
// is healthy, the other zone's is the connect-retry fallback, and when
// the own zone is unhealthy the other zone takes over.
func TestRoutesFollowPriorities(t *testing.T) {
	svc := func(health registrypb.Health) *registry.Service {
		return &registry.Service{
			Hostname: "order.shop.svc.cluster.local",
			Ports:    []*registry.Port{{Name: "http", Number: 8080}},
			Endpoints: []*registry.Endpoint{
				{Address: "10.0.0.1", Ports: map[string]uint32{"http": 80}, Network: "n", Health: health,
					Locality: &registry.Locality{Region: "r", Zone: "a"}},
				{Address: "10.0.0.2", Ports: map[string]uint32{"http": 80}, Network: "n", Health: registrypb.Health_HEALTHY,
					Locality: &registry.Locality{Region: "r", Zone: "b"}},
			},
		}
	}
	name := xds.ClusterName(8080, "", "order.shop.svc.cluster.local")
	routes := &Routes{}
	build := func(health registrypb.Health) {
		snap, err := xds.Build(xds.Input{Version: "1", Network: "n", Cluster: "c", Locality: locality.Locality{Region: "r", Zone: "a"},
			Services: []*registry.Service{svc(health)}})
		if err != nil {
			t.Fatal(err)
		}
		routes.Set(tableOf(t, snap))
	}

	build(registrypb.Health_HEALTHY)
	for range 100 {
		r, err := routes.Route(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Endpoints) != 2 || r.Endpoints[0] != "10.0.0.1:80" || r.Endpoints[1] != "10.0.0.2:80" {
			t.Fatalf("route %v, want the own zone first and the other zone as fallback", r.Endpoints)
		}
	}

	build(registrypb.Health_UNHEALTHY)
	for range 100 {
		r, err := routes.Route(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Endpoints) != 1 || r.Endpoints[0] != "10.0.0.2:80" {
			t.Fatalf("route %v with the own zone unhealthy, want only the other zone", r.Endpoints)
		}
	}
}

// A DestinationRule's distribute weights reach the gateway's picks.
func TestRoutesFollowDistribute(t *testing.T) {
	rules, err := locality.ParseDestinationRules([]byte(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order, namespace: shop}
spec:
  host: order.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer: {localityLbSetting: {distribute: [{from: "r/a/*", to: {"r/a/*": 80, "r/b/*": 20}}]}}
`))
	if err != nil {
		t.Fatal(err)
	}
	svc := &registry.Service{
		Hostname: "order.shop.svc.cluster.local",
		Ports:    []*registry.Port{{Name: "http", Number: 8080}},
		Endpoints: []*registry.Endpoint{
			{Address: "10.0.0.1", Ports: map[string]uint32{"http": 80}, Network: "n", Locality: &registry.Locality{Region: "r", Zone: "a"}},
			{Address: "10.0.0.2", Ports: map[string]uint32{"http": 80}, Network: "n", Locality: &registry.Locality{Region: "r", Zone: "b"}},
		},
	}
	snap, err := xds.Build(xds.Input{Version: "1", Network: "n", Cluster: "c", Locality: locality.Locality{Region: "r", Zone: "a"},
		Services: []*registry.Service{svc},
		Policy:   func(string, string, uint32) locality.Policy { return rules[0].Policy("", 8080) }})
	if err != nil {
		t.Fatal(err)
	}
	table := tableOf(t, snap)
	shares := table.Pickers[xds.ClusterName(8080, "", svc.Hostname)].Shares()
	if a, b := shares["10.0.0.1:80"], shares["10.0.0.2:80"]; a < 0.79 || a > 0.81 || b < 0.19 || b > 0.21 {
		t.Fatalf("shares %v, want 80/20 as distributed", shares)
	}
}

// A cluster whose endpoints have not come yet is warming: a new SNI
// routed to it stays unknown, an SNI moved to it keeps its old route, the
// others keep theirs, and both route to its endpoints once they come.
func TestRoutesWaitForWarmingClusters(t *testing.T) {
	snap, err := xds.Build(labInput(t))
	if err != nil {
		t.Fatal(err)
	}
	lds, cds, eds := responsesOf(t, snap)
	st := newState()
	for _, resp := range []*discoverypb.DiscoveryResponse{lds, cds, eds} {
		if err := st.apply(resp); err != nil {
			t.Fatal(err)
		}
	}
	before := st.table()
	if len(before.Routes) < 3 {
		t.Fatalf("the lab's input routes %d SNIs, want several", len(before.Routes))
	}
	var moved, donor string // two routed SNIs of different clusters
	for sni, cluster := range st.chains {
		switch {
		case len(before.Routes[sni]) == 0:
		case moved == "":
			moved = sni
		case donor == "" && cluster != st.chains[moved]:
			donor = sni
		}
	}
	if donor == "" {
		t.Fatal("no two routed SNIs of different clusters")
	}
	const added, warmingCluster = "outbound_.80_._.added.shop.svc.cluster.local", "outbound|80||added.shop.svc.cluster.local"
	st.chains[moved], st.chains[added] = warmingCluster, warmingCluster

	warming := st.table()
	for sni, addrs := range before.Routes {
		if got := warming.Routes[sni]; !slices.Equal(got, addrs) {
			t.Errorf("%s routes to %v while a cluster warms, want %v as before", sni, got, addrs)
		}
	}
	if addrs, ok := warming.Lookup(added); ok {
		t.Errorf("a new SNI of a warming cluster routes to %v, want unknown", addrs)
	}

	// The endpoints come: the donor's.
	cla := proto.Clone(st.cla[st.chains[donor]]).(*endpointpb.ClusterLoadAssignment)
	cla.ClusterName = warmingCluster
	st.cla[warmingCluster] = cla
	warm := st.table()
	for _, sni := range []string{added, moved} {
		if addrs, ok := warm.Lookup(sni); !ok || !slices.Equal(addrs, before.Routes[donor]) {
			t.Errorf("once its cluster's endpoints came, %s routes to %v (%v), want %v", sni, addrs, ok, before.Routes[donor])
		}
	}
}

// tableOf is the routing table a gateway's client makes of snap.
func tableOf(t *testing.T, snap *cachev3.Snapshot) *Table {
	t.Helper()
	table, err := Decode(responsesOf(t, snap))
	if err != nil {
		t.Fatal(err)
	}
	return table
}

// responsesOf is snap as the LDS, CDS and EDS responses a client receives.
func responsesOf(t *testing.T, snap *cachev3.Snapshot) (lds, cds, eds *discoverypb.DiscoveryResponse) {
	t.Helper()
	var resps []*discoverypb.DiscoveryResponse
	for _, typ := range []resourcev3.Type{resourcev3.ListenerType, resourcev3.ClusterType, resourcev3.EndpointType} {
		resp := &discoverypb.DiscoveryResponse{TypeUrl: typ}
		for _, r := range snap.GetResources(typ) {
			a, err := anypb.New(r.(proto.Message))
			if err != nil {
				t.Fatal(err)
			}
			resp.Resources = append(resp.Resources, a)
		}
		resps = append(resps, resp)
	}
	return resps[0], resps[1], resps[2]
}
