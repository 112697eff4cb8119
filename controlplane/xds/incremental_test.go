package xds

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
)

// clientTypes are the types of the clients' resources.
var clientTypes = []string{resourcev3.ListenerType, resourcev3.ClusterType, resourcev3.EndpointType}

// clustersOf and listenersOf name the CDS and LDS resources of services
// svc<i>.
func clustersOf(ids ...int) []string { return endpointsOf(ids...) }

func listenersOf(ids ...int) []string {
	var out []string
	for _, i := range ids {
		out = append(out, net.JoinHostPort(fmt.Sprintf("svc%d.shop.svc.cluster.local", i), "9090"))
	}
	slices.Sort(out)
	return out
}

// One changed service reaches every client as that service's assignment
// alone, and only the clients that watch it; a removed service reaches
// delta clients as that removal alone. Several delta and state-of-the-
// world clients watch subsets and all of the listeners, clusters and
// assignments of six services. A client sent anything it should not have
// been would see it before the response the next step expects.
func TestOneChangeSendsOnlyItsResources(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, addr := serveADS(t, ctx)
	services := []*registry.Service{shopService(0, 1), shopService(1, 1), shopService(2, 1), shopService(3, 1), shopService(4, 1), shopService(5, 1)}
	reuse := &Reuse{}
	version := 0
	publish := func() {
		t.Helper()
		version++
		c, err := BuildClients(ClientsInput{Version: fmt.Sprint(version), Cluster: "east", Network: "n", Reuse: reuse,
			Views: []ClusterView{{Name: "east", Info: &registry.ClusterInfo{Network: "n"}, Services: slices.Clone(services)}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.UpdateClients(ctx, c.Snapshot); err != nil {
			t.Fatal(err)
		}
	}
	publish()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const node = ClientNodePrefix + "10.1.0.1~app.shop~shop.svc.cluster.local"
	type client struct {
		name  string
		delta bool
		typ   string
		names []string // nil: all
		first []string
		// want: what each step sends (a step without an entry sends
		// nothing).
		want map[int]seen
	}
	all := []int{0, 1, 2, 3, 4, 5}
	clients := []client{
		{name: "delta endpoints, all", delta: true, typ: resourcev3.EndpointType, first: endpointsOf(all...), want: map[int]seen{
			1: {names: endpointsOf(1)}, 2: {removed: endpointsOf(3)}, 3: {names: endpointsOf(2)}}},
		{name: "delta endpoints 1 and 2", delta: true, typ: resourcev3.EndpointType, names: endpointsOf(1, 2), first: endpointsOf(1, 2), want: map[int]seen{
			1: {names: endpointsOf(1)}, 3: {names: endpointsOf(2)}}},
		{name: "delta endpoints 3", delta: true, typ: resourcev3.EndpointType, names: endpointsOf(3), first: endpointsOf(3), want: map[int]seen{
			2: {removed: endpointsOf(3)}}},
		{name: "delta clusters, all", delta: true, typ: resourcev3.ClusterType, first: clustersOf(all...), want: map[int]seen{
			2: {removed: clustersOf(3)}}},
		{name: "delta listeners, all", delta: true, typ: resourcev3.ListenerType, first: listenersOf(all...), want: map[int]seen{
			2: {removed: listenersOf(3)}}},
		{name: "sotw endpoints 1, 2 and 3", typ: resourcev3.EndpointType, names: endpointsOf(1, 2, 3), first: endpointsOf(1, 2, 3), want: map[int]seen{
			1: {names: endpointsOf(1)}, 3: {names: endpointsOf(2)}}},
		{name: "sotw clusters, all", typ: resourcev3.ClusterType, first: clustersOf(all...), want: map[int]seen{
			2: {names: clustersOf(0, 1, 2, 4, 5)}}},
	}
	watchers := make([]*watcher, len(clients))
	for i, c := range clients {
		if c.delta {
			watchers[i] = watchDelta(t, ctx, conn, node, c.typ, c.names)
		} else {
			watchers[i] = watchSotW(t, ctx, conn, node, c.typ, c.names)
		}
		if got := watchers[i].next(); !slices.Equal(got.names, c.first) {
			t.Fatalf("%s: first response %v, want %v", c.name, got.names, c.first)
		}
	}
	check := func(step int) {
		t.Helper()
		for i, c := range clients {
			want, ok := c.want[step]
			if !ok {
				continue
			}
			got := watchers[i].next()
			if !slices.Equal(got.names, want.names) || !slices.Equal(got.removed, want.removed) {
				t.Errorf("%s, step %d: got %v removed %v, want %v removed %v", c.name, step, got.names, got.removed, want.names, want.removed)
			}
		}
	}
	// Step 1: svc1's endpoint moves.
	services[1] = shopService(1, 2)
	publish()
	check(1)
	// Step 2: svc3 goes away.
	services = slices.Delete(services, 3, 4)
	publish()
	check(2)
	// Step 3: svc2's endpoint moves; the clients that were to get nothing
	// before would see that first.
	services[2] = shopService(2, 2)
	publish()
	check(3)
}

// A build that reuses the last one renders again exactly the hosts whose
// inputs changed, and its result equals a build from scratch: a changed
// service, a policy, a remote gateway that goes down and a cluster that
// goes down each rebuild their own hosts and nothing else.
func TestReuseRebuildsOnlyWhatChanged(t *testing.T) {
	west := &registry.ClusterInfo{Network: "w", Gateways: []*registry.Gateway{{Address: "192.0.2.9", Port: 15443, Network: "w"}}}
	remote := &registry.Service{
		Hostname: "svc9.shop.svc.cluster.local", Namespace: "shop", Name: "svc9",
		Ports:     []*registry.Port{{Name: "grpc", Number: 9090, Protocol: "GRPC"}},
		Endpoints: []*registry.Endpoint{{Address: "10.9.0.1", Ports: map[string]uint32{"grpc": 9090}, Network: "w"}},
	}
	// The infos are the same messages from build to build, as a registry
	// view hands them out.
	eastInfo := &registry.ClusterInfo{Network: "n"}
	east := []*registry.Service{shopService(0, 1), shopService(1, 1), shopService(2, 1), shopService(3, 1)}
	policies := map[string]locality.Policy{}
	gatewayDown, westDown := false, false
	input := func(reuse *Reuse) ClientsInput {
		return ClientsInput{Version: "1", Cluster: "east", Network: "n", Reuse: reuse,
			Views: []ClusterView{
				{Name: "east", Info: eastInfo, Services: slices.Clone(east)},
				{Name: "west", Info: west, Services: []*registry.Service{remote}},
			},
			Policy: func(host, _ string, _ uint32) locality.Policy {
				if p, ok := policies[host]; ok {
					return p
				}
				return locality.DefaultPolicy()
			},
			GatewayDown: func(string) bool { return gatewayDown },
			ClusterDown: func(c string) bool { return c == "west" && westDown },
		}
	}
	reuse := &Reuse{}
	build := func() map[string]types.Resource {
		t.Helper()
		c, err := BuildClients(input(reuse))
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := BuildClients(input(nil))
		if err != nil {
			t.Fatal(err)
		}
		out := make(map[string]types.Resource)
		for _, typ := range clientTypes {
			got, want := c.Snapshot.GetResources(typ), fresh.Snapshot.GetResources(typ)
			if len(got) != len(want) {
				t.Fatalf("%s: %d resources reused, %d built fresh", typ, len(got), len(want))
			}
			for name, r := range got {
				if !proto.Equal(r, want[name]) {
					t.Fatalf("%s %s differs from a build from scratch", typ, name)
				}
				out[typ+" "+name] = r
			}
		}
		return out
	}
	last := build()
	step := func(what string, hosts ...string) {
		t.Helper()
		next := build()
		var rebuilt []string
		for key, r := range next {
			if last[key] != r {
				rebuilt = append(rebuilt, key)
			}
		}
		var want []string
		for _, h := range hosts {
			for _, typ := range clientTypes {
				name := ClusterName(9090, "", h)
				if typ == resourcev3.ListenerType {
					name = net.JoinHostPort(h, "9090")
				}
				want = append(want, typ+" "+name)
			}
		}
		slices.Sort(rebuilt)
		slices.Sort(want)
		if !slices.Equal(rebuilt, want) {
			t.Errorf("%s: rebuilt %v, want %v", what, rebuilt, want)
		}
		last = next
	}
	step("nothing changed")
	east[2] = shopService(2, 7)
	step("svc2 changed", "svc2.shop.svc.cluster.local")
	p := locality.DefaultPolicy()
	p.OutlierDetection = true
	policies["svc1.shop.svc.cluster.local"] = p
	step("svc1's policy changed", "svc1.shop.svc.cluster.local")
	gatewayDown = true
	step("west's gateway down", "svc9.shop.svc.cluster.local")
	westDown = true
	step("west down", "svc9.shop.svc.cluster.local")
	east = east[:3]
	step("svc3 removed")
	if _, ok := last[resourcev3.EndpointType+" "+ClusterName(9090, "", "svc3.shop.svc.cluster.local")]; ok {
		t.Error("svc3's assignment is still served after svc3 was removed")
	}
}

// A gateway build that reuses the last one renders again only the
// services whose message, subsets or policy changed, and equals a build
// from scratch.
func TestGatewayReuseRebuildsOnlyWhatChanged(t *testing.T) {
	in := labInput(t)
	reuse := &GatewayReuse{}
	build := func() map[string]types.Resource {
		t.Helper()
		reused := in
		reused.Reuse = reuse
		snap, err := Build(reused)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := Build(in)
		if err != nil {
			t.Fatal(err)
		}
		out := make(map[string]types.Resource)
		for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType} {
			got, want := snap.GetResources(typ), fresh.GetResources(typ)
			if len(got) != len(want) {
				t.Fatalf("%s: %d resources reused, %d built fresh", typ, len(got), len(want))
			}
			for name, r := range got {
				if !proto.Equal(r, want[name]) {
					t.Fatalf("%s %s differs from a build from scratch", typ, name)
				}
				// The listener holds every chain, and the internal names
				// are rendered each time: only the services' clusters and
				// assignments are reused.
				if typ != resourcev3.ListenerType && strings.HasPrefix(name, "outbound_") {
					out[name] = r
				}
			}
		}
		return out
	}
	last := build()
	step := func(what, host string) {
		t.Helper()
		next := build()
		var rebuilt, want []string
		for name, r := range next {
			if last[name] != r {
				rebuilt = append(rebuilt, name)
			}
			if strings.HasSuffix(name, "_."+host) {
				want = append(want, name)
			}
		}
		slices.Sort(rebuilt)
		slices.Sort(want)
		if host == "" {
			want = nil
		}
		if !slices.Equal(rebuilt, want) {
			t.Errorf("%s: rebuilt %v, want %v", what, rebuilt, want)
		}
		last = next
	}
	step("nothing changed", "")
	var changed string
	in.Services = slices.Clone(in.Services)
	for i, svc := range in.Services {
		if len(svc.GetEndpoints()) > 0 {
			c := proto.Clone(svc).(*registry.Service)
			c.Endpoints[0].Weight++
			in.Services[i], changed = c, c.GetHostname()
			break
		}
	}
	step("one service's endpoint weight changed", changed)
	p := GatewayPolicy()
	p.PanicThreshold = 10
	in.Policy = func(host, _ string, _ uint32) locality.Policy {
		if host == changed {
			return p
		}
		return GatewayPolicy()
	}
	step("its policy changed", changed)
}
