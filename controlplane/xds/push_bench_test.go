package xds

import (
	"context"
	"fmt"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

const benchServices = 1000

var benchTypes = []string{resourcev3.ListenerType, resourcev3.ClusterType, resourcev3.EndpointType}

// benchService is service i with two endpoints; gen, the number of times
// it changed, moves the first: two generations in a row never share an
// address, or the change would be no change and nothing would be pushed.
func benchService(i, gen int) *registry.Service {
	port := map[string]uint32{"grpc": 9090}
	return &registry.Service{
		Hostname: fmt.Sprintf("svc%04d.shop.svc.cluster.local", i), Namespace: "shop", Name: fmt.Sprintf("svc%04d", i),
		Ports: []*registry.Port{{Name: "grpc", Number: 9090, Protocol: "GRPC"}},
		Endpoints: []*registry.Endpoint{
			{Address: fmt.Sprintf("10.%d.%d.%d", i/250, i%250, 1+gen%200), Ports: port, Network: "n", Health: registrypb.Health_HEALTHY},
			{Address: fmt.Sprintf("10.%d.%d.250", i/250, i%250), Ports: port, Network: "n", Health: registrypb.Health_HEALTHY},
		},
	}
}

// BenchmarkPush measures one change to one of 1,000 services, from the
// new snapshot to a client that watches every listener, cluster and
// endpoint assignment holding the change: the time, the bytes of the
// responses and the resources in them. Both clients are sent the one
// assignment that changed: the listeners and clusters, which a
// state-of-the-world client is sent whole, did not change.
func BenchmarkPush(b *testing.B) {
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		b.Run(name, func(b *testing.B) { benchPush(b, delta) })
	}
}

func benchPush(b *testing.B, delta bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	srv, addr := serveADS(b, ctx)
	services := make([]*registry.Service, benchServices)
	for i := range services {
		services[i] = benchService(i, 0)
	}
	// The builds reuse what did not change, as the control plane's do, so
	// the server compares the changed host's resources only.
	reuse := &Reuse{}
	info := &registry.ClusterInfo{Network: "n"}
	version := 0
	publish := func() {
		version++
		c, err := BuildClients(ClientsInput{Version: fmt.Sprint(version), Cluster: "east", Network: "n",
			Reuse: reuse,
			Views: []ClusterView{{Name: "east", Info: info, Services: services}}})
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
	client := newBenchClient(b, ctx, conn, delta)
	client.receive(fmt.Sprint(version), "")

	var bytes, resources int
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		changed := i % benchServices
		services[changed] = benchService(changed, i/benchServices+1)
		c, err := BuildClients(ClientsInput{Version: fmt.Sprint(version + 1), Cluster: "east", Network: "n",
			Reuse: reuse,
			Views: []ClusterView{{Name: "east", Info: info, Services: services}}})
		if err != nil {
			b.Fatal(err)
		}
		version++
		b.StartTimer()
		if err := srv.UpdateClients(ctx, c.Snapshot); err != nil {
			b.Fatal(err)
		}
		n, r := client.receive(fmt.Sprint(version), ClusterName(9090, "", services[changed].GetHostname()))
		bytes += n
		resources += r
	}
	b.ReportMetric(float64(bytes)/float64(b.N), "bytes/push")
	b.ReportMetric(float64(resources)/float64(b.N), "resources/push")
}

// benchClient is one ADS stream watching every listener, cluster and
// endpoint assignment, acknowledging every response.
type benchClient struct {
	b     *testing.B
	sotw  discoverypb.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	delta discoverypb.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
}

func newBenchClient(b *testing.B, ctx context.Context, conn *grpc.ClientConn, delta bool) *benchClient {
	ads := discoverypb.NewAggregatedDiscoveryServiceClient(conn)
	node := &corepb.Node{Id: ClientNodePrefix + "10.1.0.1~bench.shop~shop.svc.cluster.local"}
	c := &benchClient{b: b}
	var err error
	if delta {
		c.delta, err = ads.DeltaAggregatedResources(ctx)
		for _, typ := range benchTypes {
			if err == nil {
				err = c.delta.Send(&discoverypb.DeltaDiscoveryRequest{Node: node, TypeUrl: typ})
			}
		}
	} else {
		c.sotw, err = ads.StreamAggregatedResources(ctx)
		for _, typ := range benchTypes {
			if err == nil {
				err = c.sotw.Send(&discoverypb.DiscoveryRequest{Node: node, TypeUrl: typ})
			}
		}
	}
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// receive reads and acknowledges responses until the client holds
// version: the assignment named changed or, with changed empty, one
// response of every type (at version, for state of the world). It
// returns the bytes and resources received.
func (c *benchClient) receive(version, changed string) (bytes, resources int) {
	pending := make(map[string]bool)
	for _, typ := range benchTypes {
		pending[typ] = true
	}
	for len(pending) > 0 {
		if c.delta != nil {
			resp, err := c.delta.Recv()
			if err != nil {
				c.b.Fatal(err)
			}
			bytes += proto.Size(resp)
			resources += len(resp.GetResources())
			if err := c.delta.Send(&discoverypb.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}); err != nil {
				c.b.Fatal(err)
			}
			if changed == "" {
				delete(pending, resp.GetTypeUrl())
				continue
			}
			for _, r := range resp.GetResources() {
				if r.GetName() == changed {
					clear(pending)
				}
			}
			continue
		}
		resp, err := c.sotw.Recv()
		if err != nil {
			c.b.Fatal(err)
		}
		bytes += proto.Size(resp)
		resources += len(resp.GetResources())
		err = c.sotw.Send(&discoverypb.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
		if err != nil {
			c.b.Fatal(err)
		}
		if changed == "" {
			if resp.GetVersionInfo() == version {
				delete(pending, resp.GetTypeUrl())
			}
			continue
		}
		// Each type has its own version; the change is the assignment.
		for _, name := range resourceNames(c.b, resp.GetResources()) {
			if name == changed {
				clear(pending)
			}
		}
	}
	return bytes, resources
}
