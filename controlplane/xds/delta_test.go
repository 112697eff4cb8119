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

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// shopService is service svc<i> of namespace shop, with one endpoint whose
// last octet is ip.
func shopService(i, ip int) *registry.Service {
	return &registry.Service{
		Hostname: fmt.Sprintf("svc%d.shop.svc.cluster.local", i), Namespace: "shop", Name: fmt.Sprintf("svc%d", i),
		Ports: []*registry.Port{{Name: "grpc", Number: 9090, Protocol: "GRPC"}},
		Endpoints: []*registry.Endpoint{{Address: fmt.Sprintf("10.0.%d.%d", i, ip), Ports: map[string]uint32{"grpc": 9090},
			Network: "n", Health: registrypb.Health_HEALTHY}},
	}
}

// endpointsOf names the EDS resources of services svc<i>.
func endpointsOf(ids ...int) []string {
	var out []string
	for _, i := range ids {
		out = append(out, ClusterName(9090, "", fmt.Sprintf("svc%d.shop.svc.cluster.local", i)))
	}
	slices.Sort(out)
	return out
}

// State-of-the-world and delta clients naming one, several or all of the
// services see services added, removed and changed while they watch: a
// state-of-the-world client of endpoint assignments gets the ones it
// names that were added or changed (the protocol lets it keep those left
// out), a delta client only the resources that changed and the names of
// those removed.
func TestClientsSeeAddsAndRemovalsOverSotWAndDelta(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, addr := serveADS(t, ctx)
	publish := func(version string, services ...*registry.Service) {
		t.Helper()
		c, err := BuildClients(ClientsInput{Version: version, Cluster: "east", Network: "n",
			Views: []ClusterView{{Name: "east", Info: &registry.ClusterInfo{Network: "n"}, Services: services}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.UpdateClients(ctx, c.Snapshot); err != nil {
			t.Fatal(err)
		}
	}
	// Five services, svc0 to svc4.
	publish("1", shopService(0, 1), shopService(1, 1), shopService(2, 1), shopService(3, 1), shopService(4, 1))

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const node = ClientNodePrefix + "10.1.0.1~app.shop~shop.svc.cluster.local"
	type client struct {
		name  string
		delta bool
		names []string // nil: all
		// want after each version: the names in the response and, for
		// delta, the names removed.
		want [3]seen
	}
	clients := []client{
		{name: "sotw one", names: endpointsOf(0), want: [3]seen{
			{names: endpointsOf(0)}, {names: endpointsOf(0)}, {names: endpointsOf(0)}}},
		{name: "sotw several", names: endpointsOf(1, 3, 5), want: [3]seen{
			{names: endpointsOf(1, 3)}, {names: endpointsOf(5)}, {names: endpointsOf(3)}}},
		{name: "sotw all", want: [3]seen{
			{names: endpointsOf(0, 1, 2, 3, 4)}, {names: endpointsOf(0, 5)}, {names: endpointsOf(0, 3)}}},
		{name: "delta one", delta: true, names: endpointsOf(0), want: [3]seen{
			{names: endpointsOf(0)}, {names: endpointsOf(0)}, {names: endpointsOf(0)}}},
		{name: "delta several", delta: true, names: endpointsOf(1, 3, 5), want: [3]seen{
			{names: endpointsOf(1, 3)}, {names: endpointsOf(5), removed: endpointsOf(3)}, {names: endpointsOf(3)}}},
		{name: "delta all", delta: true, want: [3]seen{
			{names: endpointsOf(0, 1, 2, 3, 4)}, {names: endpointsOf(0, 5), removed: endpointsOf(3)}, {names: endpointsOf(0, 3)}}},
	}
	watchers := make([]*watcher, len(clients))
	for i, c := range clients {
		if c.delta {
			watchers[i] = watchDelta(t, ctx, conn, node, resourcev3.EndpointType, c.names)
		} else {
			watchers[i] = watchSotW(t, ctx, conn, node, resourcev3.EndpointType, c.names)
		}
	}
	check := func(step int) {
		t.Helper()
		for i, c := range clients {
			got := watchers[i].next()
			want := c.want[step]
			if !slices.Equal(got.names, want.names) || !slices.Equal(got.removed, want.removed) {
				t.Errorf("%s, version %d: got %v removed %v, want %v removed %v", c.name, step+1, got.names, got.removed, want.names, want.removed)
			}
		}
	}
	check(0)
	// svc5 appears, svc3 goes away, svc0's endpoint moves.
	publish("2", shopService(0, 2), shopService(1, 1), shopService(2, 1), shopService(4, 1), shopService(5, 1))
	check(1)
	// svc3 comes back, svc0 moves again.
	publish("3", shopService(0, 3), shopService(1, 1), shopService(2, 1), shopService(3, 1), shopService(4, 1), shopService(5, 1))
	check(2)
}
