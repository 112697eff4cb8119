package xdsclient

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/file"

	"github.com/federate/federate/controlplane/xds"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The gateway's client follows snapshots from the real ADS server: routes
// by SNI to the endpoints on its network, updates, and keeps the last table
// while the server is away.
func TestClientFollowsServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := xds.NewServer(ctx, nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(lis)

	in := labInput(t)
	snap, err := xds.Build(in)
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
	tables := make(chan *Table, 16)
	client := NewClient(ClientConfig{Conn: conn, NodeID: "gw-1", OnUpdate: func(tb *Table) { tables <- tb }})
	done := make(chan error, 1)
	go func() { done <- client.Run(ctx) }()
	next := func() *Table {
		select {
		case tb := <-tables:
			return tb
		case <-ctx.Done():
			t.Fatal("no table")
			return nil
		}
	}
	tb := next()
	v2 := xds.ClusterName(8081, "v2", "payment.shop.svc.cluster.local")
	if got, ok := tb.Lookup(v2); !ok || len(got) != 1 || got[0] != "127.0.12.12:8281" {
		t.Fatalf("route %s: %v %v", v2, got, ok)
	}
	if _, ok := tb.Lookup("outbound_.8081_._.unknown.shop.svc.cluster.local"); ok {
		t.Error("an unknown SNI has a route")
	}
	grpcRoute := xds.ClusterName(9090, "", "payment.shop.svc.cluster.local")
	if got, _ := tb.Lookup(grpcRoute); len(got) != 2 {
		t.Errorf("route %s: %v, want both payment endpoints on the gateway's network", grpcRoute, got)
	}

	// A withdrawn service disappears from the table.
	in.Version = "2"
	in.Services = in.Services[:1] // inventory only
	snap2, _ := xds.Build(in)
	if err := srv.Update(ctx, snap2); err != nil {
		t.Fatal(err)
	}
	for tb = next(); len(tb.Routes) != 3; tb = next() { // inventory and the two internal names
	}
	if _, ok := tb.Lookup(v2); ok {
		t.Error("the withdrawn payment route is still there")
	}

	// The server goes away: the client reconnects when it is back and no
	// empty table is ever published in between.
	g.Stop()
	lis2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	g2 := grpc.NewServer()
	srv.Register(g2)
	go g2.Serve(lis2)
	defer g2.Stop()
	in.Version = "3"
	in.Services = labInput(t).Services
	snap3, _ := xds.Build(in)
	if err := srv.Update(ctx, snap3); err != nil {
		t.Fatal(err)
	}
	for tb = next(); len(tb.Routes) != 9; tb = next() {
		if len(tb.Routes) == 0 {
			t.Fatal("an empty table was published")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// labInput is the control plane's golden input: the lab's central cluster.
func labInput(t *testing.T) xds.Input {
	t.Helper()
	loc, _ := registry.ParseLocality("eu-central/eu-central-1a")
	services, err := file.Load(file.Config{Dir: "../../controlplane/xds/testdata", Network: "net-central", Locality: loc, TrustDomain: "central.shop"})
	if err != nil {
		t.Fatal(err)
	}
	return xds.Input{
		Version: "1", Network: "net-central", Services: services,
		Subsets: map[string][]xds.Subset{"payment.shop.svc.cluster.local": {
			{Name: "v1", Labels: map[string]string{"version": "v1"}},
			{Name: "v2", Labels: map[string]string{"version": "v2"}},
		}},
		Cluster:  "central",
		Internal: map[sni.Component]string{sni.ControlPlane: "127.0.0.1:15013", sni.Gossip: "127.0.0.1:15014"},
		Locality: locality.FromProto(loc),
	}
}
