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

// costEndpoints is the endpoints of every service in BenchmarkChangeCost.
const costEndpoints = 10

// costService is service i of the benchmark's federation; gen moves its
// first endpoint.
func costService(i, gen int) *registry.Service {
	eps := make([]*registry.Endpoint, costEndpoints)
	for e := range eps {
		last := 10 + e
		if e == 0 {
			last = 100 + gen%150
		}
		eps[e] = &registry.Endpoint{
			Address: fmt.Sprintf("10.%d.%d.%d", i/250, i%250, last), Ports: map[string]uint32{"grpc": 9090},
			Network: "n", Health: registrypb.Health_HEALTHY,
			Locality: &registry.Locality{Region: "eu", Zone: fmt.Sprintf("eu-%d", e%3)},
		}
	}
	return &registry.Service{
		Hostname: fmt.Sprintf("svc%d.shop.svc.cluster.local", i), Namespace: "shop", Name: fmt.Sprintf("svc%d", i),
		Ports:     []*registry.Port{{Name: "grpc", Number: 9090, Protocol: "GRPC"}},
		Endpoints: eps,
	}
}

// BenchmarkChangeCost measures what one changed service costs the
// control plane as the federation grows (services of 10 endpoints each):
// building the clients' configuration, updating the xDS server, and
// delivering the change to a delta client subscribed to every endpoint
// assignment and to a state-of-the-world client naming five of them, the
// changed one among them. Per change it reports the time, the
// allocations, and the resources the two clients were sent.
func BenchmarkChangeCost(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) { benchChangeCost(b, n) })
	}
}

func benchChangeCost(b *testing.B, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	srv, addr := serveADS(b, ctx)
	services := make([]*registry.Service, n)
	gens := make([]int, n)
	for i := range services {
		services[i] = costService(i, 0)
	}
	info := &registry.ClusterInfo{Network: "n", Locality: &registry.Locality{Region: "eu", Zone: "eu-0"}}
	reuse := &Reuse{} // reuse
	version := 0
	publish := func() {
		version++
		in := ClientsInput{Version: fmt.Sprint(version), Cluster: "east", Network: "n",
			Views: []ClusterView{{Name: "east", Info: info, Services: services}}}
		in.Reuse = reuse // reuse
		c, err := BuildClients(in)
		if err != nil {
			b.Fatal(err)
		}
		if err := srv.UpdateClients(ctx, c.Snapshot); err != nil {
			b.Fatal(err)
		}
	}
	publish()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	const node = ClientNodePrefix + "10.1.0.1~bench.shop~shop.svc.cluster.local"
	named := endpointsOf(0, 1, 2, 3, 4)
	delta := watchDelta(b, ctx, conn, node, resourcev3.EndpointType, nil)
	sotw := watchSotW(b, ctx, conn, node, resourcev3.EndpointType, named)
	if got := len(delta.next().names); got != n {
		b.Fatalf("delta client: %d assignments at first, want %d", got, n)
	}
	if got := sotw.next().names; !slices.Equal(got, named) {
		b.Fatalf("state-of-the-world client: %v at first, want %v", got, named)
	}

	resources := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		changed := i % len(named)
		gens[changed]++
		services[changed] = costService(changed, gens[changed])
		publish()
		want := endpointsOf(changed)[0]
		resources += awaitResource(delta, want) + awaitResource(sotw, want)
	}
	b.StopTimer()
	b.ReportMetric(float64(resources)/float64(b.N), "resources/change")
}

// awaitResource reads responses until one carries name, and returns how
// many resources they carried.
func awaitResource(w *watcher, name string) int {
	n := 0
	for {
		got := w.next()
		n += len(got.names)
		if slices.Contains(got.names, name) {
			return n
		}
	}
}
