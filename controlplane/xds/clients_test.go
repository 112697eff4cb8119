package xds

import (
	"fmt"
	"testing"

	"github.com/federate/federate/eastwest/xdsclient"

	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

const orderHost = "order.shop.svc.cluster.local"

// clientViews: clients in west (r1/z1); order runs in east (r1/z2, two
// endpoints) and central (r2/z3, one), each on its own network behind its
// gateway.
func clientViews() []ClusterView {
	view := func(name, region, zone string, port uint32, n int) ClusterView {
		loc := &registry.Locality{Region: region, Zone: zone}
		svc := &registry.Service{Hostname: orderHost, Ports: []*registry.Port{{Name: "grpc", Number: 9090}}}
		for i := range n {
			svc.Endpoints = append(svc.Endpoints, &registry.Endpoint{
				Address: fmt.Sprintf("10.0.%d.%d", port-15000, i+1), Ports: map[string]uint32{"grpc": 9090},
				Network: "net-" + name, Locality: loc, Health: registrypb.Health_HEALTHY,
				Labels: map[string]string{"version": fmt.Sprintf("v%d", i+1)},
			})
		}
		info := &registry.ClusterInfo{Network: "net-" + name, Locality: loc,
			Gateways: []*registry.Gateway{{Address: "127.0.0.1", Port: port, Network: "net-" + name, Locality: loc}}}
		return ClusterView{Name: name, Info: info, Services: []*registry.Service{svc}}
	}
	return []ClusterView{
		view("east", "r1", "z2", 15001, 2),
		view("central", "r2", "z3", 15002, 1),
		{Name: "west", Info: &registry.ClusterInfo{Network: "net-west", Locality: &registry.Locality{Region: "r1", Zone: "z1"}}},
	}
}

func failoverPolicy(string, string, uint32) locality.Policy {
	p := locality.DefaultPolicy()
	p.OutlierDetection = true
	return p
}

func TestBuildClientsSplitHorizonAndFailureDomains(t *testing.T) {
	in := ClientsInput{
		Version: "1", Cluster: "west", Network: "net-west", Locality: locality.Locality{Region: "r1", Zone: "z1"},
		Views: clientViews(), Policy: failoverPolicy,
		Subsets: map[string][]Subset{orderHost: {{Name: "v2", Labels: map[string]string{"version": "v2"}}}},
	}
	name := ClusterName(9090, "", orderHost)
	shares := func(in ClientsInput) map[string]float64 {
		t.Helper()
		out, err := BuildClients(in)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := out.Snapshot.GetResources(resourcev3.ListenerType)[orderHost+":9090"]; !ok {
			t.Fatalf("no listener %s:9090 for proxyless gRPC", orderHost)
		}
		cla := out.Snapshot.GetResources(resourcev3.EndpointType)[name].(*endpointpb.ClusterLoadAssignment)
		return locality.NewPicker(xdsclient.PrioritiesFrom(nil, cla)).Shares()
	}

	out, err := BuildClients(in)
	if err != nil {
		t.Fatal(err)
	}
	prio := out.Priorities[name]
	// Remote endpoints appear as their gateways, in their locality,
	// weighted by the endpoints behind them: east (same region) first.
	if len(prio.Groups) != 2 || prio.Groups[0].Endpoints[0].HostPort() != "127.0.0.1:15001" || prio.Groups[0].Priority != 0 ||
		prio.Groups[1].Endpoints[0].HostPort() != "127.0.0.1:15002" || prio.Groups[1].Priority != 1 {
		t.Fatalf("priorities %+v, want east's gateway at 0 and central's at 1", prio.Groups)
	}
	if w := prio.Groups[0].Endpoints[0].Weight; w != 2*prio.Groups[1].Endpoints[0].Weight {
		t.Errorf("east's gateway weight %d, want twice central's (%d): it stands for two endpoints", w, prio.Groups[1].Endpoints[0].Weight)
	}
	// The subset keeps only the endpoints it selects: v2 is in east only.
	if sub := out.Priorities[ClusterName(9090, "v2", orderHost)]; len(sub.Groups) != 1 || sub.Groups[0].Endpoints[0].Weight != 1 {
		t.Errorf("subset v2: %+v, want east's gateway standing for one endpoint", sub.Groups)
	}
	if got := shares(in); got["127.0.0.1:15001"] != 1 {
		t.Fatalf("healthy: shares %v, want all on east", got)
	}

	gwDown := in
	gwDown.GatewayDown = func(addr string) bool { return addr == "127.0.0.1:15001" }
	if got := shares(gwDown); got["127.0.0.1:15002"] != 1 {
		t.Fatalf("east's gateway down: shares %v, want all on central", got)
	}
	clusterDown := in
	clusterDown.ClusterDown = func(c string) bool { return c == "east" }
	if got := shares(clusterDown); got["127.0.0.1:15002"] != 1 {
		t.Fatalf("east dead: shares %v, want all on central", got)
	}
	// Everything down: the endpoints stay listed (UNHEALTHY), never an
	// empty set.
	allDown := in
	allDown.ClusterDown = func(string) bool { return true }
	out, err = BuildClients(allDown)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(out.Priorities[name].Groups); n != 2 {
		t.Fatalf("all down: %d groups, want both kept as UNHEALTHY", n)
	}
}

// A network with no gateway: its endpoints are left out with a warning.
func TestBuildClientsWarnsUnreachable(t *testing.T) {
	views := clientViews()
	views[1].Info.Gateways = nil
	out, err := BuildClients(ClientsInput{Version: "1", Cluster: "west", Network: "net-west", Views: views})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Warnings) != 1 || out.Warnings[0].Host != orderHost {
		t.Fatalf("warnings %+v, want one about central's unreachable endpoints", out.Warnings)
	}
	if g := out.Priorities[ClusterName(9090, "", orderHost)].Groups; len(g) != 1 {
		t.Fatalf("groups %+v, want east's gateway only", g)
	}
}
