package xds

import (
	"context"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// A NACK is logged and the rejected version is not resent; the next
// snapshot is delivered as usual.
func TestNACKIsNotResent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, addr := serveADS(t, ctx)

	in := labInput(t)
	snap, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Update(ctx, snap); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	responses := make(chan *discoverypb.DiscoveryResponse, 100)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				close(responses)
				return
			}
			responses <- resp
		}
	}()
	next := func(within time.Duration) *discoverypb.DiscoveryResponse {
		select {
		case r := <-responses:
			return r
		case <-time.After(within):
			return nil
		}
	}
	if err := stream.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: "gw"}, TypeUrl: resourcev3.ClusterType}); err != nil {
		t.Fatal(err)
	}
	first := next(5 * time.Second)
	if first == nil || first.GetVersionInfo() != "1" || len(first.GetResources()) != len(snap.GetResources(resourcev3.ClusterType)) {
		t.Fatalf("first response: %v", first)
	}
	// NACK: the last accepted version (none), the nonce, and an error.
	err = stream.Send(&discoverypb.DiscoveryRequest{
		TypeUrl: resourcev3.ClusterType, ResponseNonce: first.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: "cluster rejected"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := next(time.Second); r != nil {
		t.Fatalf("the rejected configuration was resent: version %s", r.GetVersionInfo())
	}
	if srv.NACKs("gw") != 1 {
		t.Errorf("NACKs counted: %d, want 1", srv.NACKs("gw"))
	}
	// A new snapshot still arrives.
	in.Version = "2"
	in.Services = in.Services[:1]
	snap2, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Update(ctx, snap2); err != nil {
		t.Fatal(err)
	}
	if r := next(5 * time.Second); r == nil || r.GetVersionInfo() != "2" {
		t.Fatalf("after a new snapshot: %v", r)
	}
}
