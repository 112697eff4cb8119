package xds

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// exportedService is a service of namespace ns with an exportTo list,
// in cluster east.
func exportedService(name, ns string, exportTo ...string) *registry.Service {
	return &registry.Service{
		Hostname: name + "." + ns + ".svc.cluster.local", Namespace: ns, Name: name, ExportTo: exportTo,
		Ports: []*registry.Port{{Name: "grpc", Number: 9090, Protocol: "GRPC"}},
		Endpoints: []*registry.Endpoint{
			{Address: "10.0.0.1", Ports: map[string]uint32{"grpc": 9090}, Network: "n", Health: registrypb.Health_HEALTHY, Labels: map[string]string{"version": "v1"}},
			{Address: "10.0.0.2", Ports: map[string]uint32{"grpc": 9090}, Network: "n", Health: registrypb.Health_HEALTHY, Labels: map[string]string{"version": "v2"}},
		},
	}
}

func clusterOf(name, ns, subset string) string {
	return ClusterName(9090, subset, name+"."+ns+".svc.cluster.local")
}

// Clients of each namespace see the services and DestinationRule subsets
// exported to them: "." is the owner's namespace, "*" and no exportTo
// are every namespace, "~" none, and named namespaces those named; a
// service added while they watch reaches only the namespaces it is
// exported to, over state of the world and delta alike.
func TestNamespacesSeeWhatIsExportedToThem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, addr := serveADS(t, ctx)
	services := []*registry.Service{
		exportedService("cart", "shop", "."),
		exportedService("catalog", "shop"),
		exportedService("search", "shop", "*"),
		exportedService("pay", "billing", ".", "shop"),
		exportedService("audit", "ops", "~"),
		exportedService("status", "ops", "billing", "other"),
	}
	// The rule for catalog is seen in shop only: its subset v1 too.
	rules := map[string]Exported{"catalog.shop.svc.cluster.local": {Namespace: "shop", ExportTo: []string{"."}}}
	subsets := map[string][]Subset{"catalog.shop.svc.cluster.local": {{Name: "v1", Labels: map[string]string{"version": "v1"}}}}
	publish := func(version string, services []*registry.Service) {
		t.Helper()
		views, err := BuildClientViews(ClientsInput{Version: version, Cluster: "east", Network: "n", Subsets: subsets,
			Policy: func(string, string, uint32) locality.Policy { return locality.DefaultPolicy() },
			Views:  []ClusterView{{Name: "east", Info: &registry.ClusterInfo{Network: "n"}, Services: services}}}, rules)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.UpdateClientViews(ctx, views); err != nil {
			t.Fatal(err)
		}
	}
	publish("1", services)

	want := map[string][]string{
		"shop": {clusterOf("cart", "shop", ""), clusterOf("catalog", "shop", ""), clusterOf("catalog", "shop", "v1"),
			clusterOf("pay", "billing", ""), clusterOf("search", "shop", "")},
		"billing": {clusterOf("catalog", "shop", ""), clusterOf("pay", "billing", ""), clusterOf("search", "shop", ""), clusterOf("status", "ops", "")},
		"ops":     {clusterOf("catalog", "shop", ""), clusterOf("search", "shop", "")},
		"other":   {clusterOf("catalog", "shop", ""), clusterOf("search", "shop", ""), clusterOf("status", "ops", "")},
	}
	for _, names := range want {
		slices.Sort(names)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	type client struct {
		ns    string
		delta bool
		w     *watcher
	}
	var clients []*client
	for _, ns := range []string{"shop", "billing", "ops", "other"} {
		for _, delta := range []bool{false, true} {
			node := fmt.Sprintf("%s10.1.0.1~app.%s~%s.svc.cluster.local", ClientNodePrefix, ns, ns)
			c := &client{ns: ns, delta: delta}
			if delta {
				c.w = watchDelta(t, ctx, conn, node, resourcev3.ClusterType, nil)
			} else {
				c.w = watchSotW(t, ctx, conn, node, resourcev3.ClusterType, nil)
			}
			clients = append(clients, c)
		}
	}
	for _, c := range clients {
		if got := c.w.next().names; !slices.Equal(got, want[c.ns]) {
			t.Errorf("namespace %s (delta %v): got %v, want %v", c.ns, c.delta, got, want[c.ns])
		}
	}

	// A service exported to billing only appears; billing's clients get it,
	// and the other delta clients nothing: the next thing they see is the
	// removal of search, exported to all.
	// Version 3 waits until billing's delta client has version 2, so that
	// the two changes reach it as two responses.
	added := exportedService("ledger", "billing", "billing")
	publish("2", append(slices.Clone(services), added))
	for _, c := range clients {
		if c.delta && c.ns == "billing" {
			if got := c.w.next(); !slices.Equal(got.names, []string{clusterOf("ledger", "billing", "")}) || len(got.removed) != 0 {
				t.Errorf("billing (delta): got %v removed %v, want the ledger added only", got.names, got.removed)
			}
		}
	}
	withoutSearch := slices.DeleteFunc(slices.Clone(services), func(s *registry.Service) bool { return s.GetName() == "search" })
	publish("3", append(withoutSearch, added))
	search := clusterOf("search", "shop", "")
	for _, c := range clients {
		got := c.w.next()
		// A state-of-the-world client may get versions 2 and 3 one by one.
		for !c.delta && slices.Contains(got.names, search) {
			got = c.w.next()
		}
		if c.delta {
			if len(got.names) != 0 || !slices.Equal(got.removed, []string{search}) {
				t.Errorf("namespace %s (delta): got %v removed %v, want search removed only", c.ns, got.names, got.removed)
			}
			continue
		}
		wantNow := slices.DeleteFunc(slices.Clone(want[c.ns]), func(n string) bool { return n == search })
		if c.ns == "billing" {
			wantNow = append(wantNow, clusterOf("ledger", "billing", ""))
			slices.Sort(wantNow)
		}
		if !slices.Equal(got.names, wantNow) {
			t.Errorf("namespace %s: got %v, want %v", c.ns, got.names, wantNow)
		}
	}
}
