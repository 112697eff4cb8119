package xds

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/anypb"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// Clients that name some of the listeners (as a grpc-go channel names the
// one service it dials) get exactly those, whether they name one, several
// or all of six services; a listener added while they watch reaches those
// who name it.
func TestClientsNamingASubsetGetAnswered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, addr := serveADS(t, ctx)

	services := func(n int) []*registry.Service {
		var out []*registry.Service
		for i := range n {
			out = append(out, &registry.Service{
				Hostname: fmt.Sprintf("svc%d.shop.svc.cluster.local", i), Namespace: "shop", Name: fmt.Sprintf("svc%d", i),
				Ports: []*registry.Port{{Name: "grpc", Number: 9090, Protocol: "GRPC"}},
				Endpoints: []*registry.Endpoint{{Address: fmt.Sprintf("10.0.0.%d", i+1), Ports: map[string]uint32{"grpc": 9090},
					Network: "n", Health: registrypb.Health_HEALTHY}},
			})
		}
		return out
	}
	publish := func(version string, n int) {
		t.Helper()
		c, err := BuildClients(ClientsInput{Version: version, Cluster: "east", Network: "n",
			Views: []ClusterView{{Name: "east", Info: &registry.ClusterInfo{Network: "n"}, Services: services(n)}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.UpdateClients(ctx, c.Snapshot); err != nil {
			t.Fatal(err)
		}
	}
	publish("1", 5)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	names := func(n ...int) []string {
		var out []string
		for _, i := range n {
			out = append(out, fmt.Sprintf("svc%d.shop.svc.cluster.local:9090", i))
		}
		return out
	}
	watch := func(want []string) discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
		t.Helper()
		stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = stream.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: ClientNodePrefix + "10.1.0.1~app"}, TypeUrl: resourcev3.ListenerType, ResourceNames: want})
		if err != nil {
			t.Fatal(err)
		}
		return stream
	}
	expect := func(stream discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient, want []string) {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("no answer for %v: %v", want, err)
		}
		var got []string
		for _, r := range resp.GetResources() {
			l, err := resourceName(r)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, l)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("got listeners %v, want %v", got, want)
		}
	}
	for _, want := range [][]string{names(2), names(0, 3), names(0, 1, 2, 3, 4)} {
		expect(watch(want), want)
	}
	// A sixth service appears while a client that names it watches: the
	// client acknowledges what it has (nothing of it yet) and gets it.
	waiting := watch(names(5))
	first, err := waiting.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(first.GetResources()); n != 0 {
		t.Fatalf("%d listeners before svc5 exists", n)
	}
	err = waiting.Send(&discoverypb.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, ResourceNames: names(5),
		VersionInfo: first.GetVersionInfo(), ResponseNonce: first.GetNonce()})
	if err != nil {
		t.Fatal(err)
	}
	publish("2", 6)
	expect(waiting, names(5))
}

// resourceName is the name of a listener in a response.
func resourceName(a *anypb.Any) (string, error) {
	var l listenerpb.Listener
	if err := a.UnmarshalTo(&l); err != nil {
		return "", err
	}
	return l.GetName(), nil
}

// serveADS runs an ADS server on loopback until the test ends.
func serveADS(t testing.TB, ctx context.Context) (*Server, string) {
	t.Helper()
	srv := NewServer(ctx, nil)
	g := grpc.NewServer()
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return srv, lis.Addr().String()
}
