package workloads

import (
	"log/slog"
	"maps"
	"slices"
	"testing"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// An agent's targets come from the shared locality code: split horizon
// replaces east's endpoints by east's gateway, weighted by the endpoints
// behind it, and the agent policy (outlier detection on) orders them by
// locality; the agent's picker then sends everything to priority 0 while
// it is healthy. A DestinationRule's policy replaces the default.
func TestAgentTargetsFollowLocalityPolicy(t *testing.T) {
	t.Parallel()
	payment := func(cluster, network string, loc *registry.Locality, addrs ...string) *registry.Service {
		s := &registry.Service{Hostname: "payment.shop.svc.cluster.local", Namespace: "shop", Ports: []*registry.Port{{Name: "http", Number: 8081}}}
		for _, a := range addrs {
			s.Endpoints = append(s.Endpoints, &registry.Endpoint{
				Address: a, Ports: map[string]uint32{"http": 9081}, Network: network, Locality: loc,
				Health: registrypb.Health_HEALTHY, SpiffeId: "spiffe://" + cluster + ".shop/ns/shop/sa/payment",
			})
		}
		return s
	}
	zoneA := &registry.Locality{Region: "eu-central", Zone: "a"}
	zoneB := &registry.Locality{Region: "eu-central", Zone: "b"}
	usEast := &registry.Locality{Region: "us-east", Zone: "b"}
	local := payment("central", "net-central", zoneA, "10.0.0.1")
	local.Endpoints = append(local.Endpoints, payment("central", "net-central", zoneB, "10.0.0.2").Endpoints...)
	sources := []locality.Source{
		{Cluster: "central", Info: &registry.ClusterInfo{Network: "net-central", Locality: zoneA}, Service: local},
		{Cluster: "east", Info: &registry.ClusterInfo{Network: "net-east", Locality: usEast, Gateways: []*registry.Gateway{{Address: "192.0.2.7", Port: 15443}}},
			Service: payment("east", "net-east", usEast, "10.1.0.1", "10.1.0.2")},
	}
	client := locality.Client{Locality: locality.FromProto(zoneA), Network: "net-central", Cluster: "central"}
	w := &Server{log: slog.New(slog.DiscardHandler)}

	up := &agentpb.Upstream{Hostname: "payment.shop.svc.cluster.local", Balance: map[uint32]*agentpb.Balance{}}
	got := map[string]*agentpb.Target{}
	for _, tg := range w.targets(client, sources[0].Service.GetPorts()[0], sources, up) {
		got[tg.GetAddress()] = tg
	}
	want := map[string]struct {
		priority, weight, port uint32
		gateway                bool
		ids                    []string
	}{
		"10.0.0.1":  {0, 1, 9081, false, []string{"spiffe://central.shop/ns/shop/sa/payment"}},
		"10.0.0.2":  {1, 1, 9081, false, []string{"spiffe://central.shop/ns/shop/sa/payment"}},
		"192.0.2.7": {2, 2, 15443, true, []string{"spiffe://east.shop/ns/shop/sa/payment"}},
	}
	if len(got) != len(want) {
		t.Fatalf("targets %v, want %d", got, len(want))
	}
	for addr, w := range want {
		g := got[addr]
		if g.GetPriority() != w.priority || g.GetWeight() != w.weight || g.GetPorts()[8081] != w.port || g.GetGateway() != w.gateway || !slices.Equal(g.GetSpiffeIds(), w.ids) {
			t.Errorf("target %s = %v, want priority %d weight %d port %d gateway %v ids %v", addr, g, w.priority, w.weight, w.port, w.gateway, w.ids)
		}
	}
	if b := up.GetBalance()[8081]; b.GetPanicThreshold() != locality.DefaultPanicThreshold || b.GetOverprovisioning() != locality.DefaultOverprovisioning {
		t.Errorf("balance %v, want the default panic threshold and overprovisioning", b)
	}
	up.Targets = slices.Collect(maps.Values(got))
	if shares := agent.NewPicker(up, 8081).Shares(); shares["10.0.0.1:9081"] != 1 {
		t.Errorf("the agent's picker shares %v, want all on the same-zone endpoint", shares)
	}

	// Without outlier detection (Istio's default DestinationRule), no
	// failover: one priority for all.
	w.cfg.Policy = func(string, uint32) locality.Policy { return locality.DefaultPolicy() }
	up.Targets = w.targets(client, sources[0].Service.GetPorts()[0], sources, up)
	for _, tg := range up.Targets {
		if tg.GetPriority() != 0 {
			t.Errorf("target %s has priority %d under a policy without failover", tg.GetAddress(), tg.GetPriority())
		}
	}
	if shares := agent.NewPicker(up, 8081).Shares(); shares["192.0.2.7:15443"] < 0.49 || shares["192.0.2.7:15443"] > 0.51 {
		t.Errorf("the agent's picker shares %v, want half through east's gateway (2 of 4 endpoints)", shares)
	}
}
