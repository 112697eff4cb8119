package xds

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/federate/federate/eastwest/xdsclient"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// One server, two groups: a proxyless gRPC client (node sidecar~...) gets
// the clients' snapshot from BuildClients and follows its priorities,
// while a gateway on the same server keeps getting the gateways' snapshot.
// The client uses plaintext credentials, so it ignores the clusters' TLS
// (tls_test.go covers it); its bootstrap still names the certificate
// provider, since grpc-go rejects a cluster naming an unknown one.
func TestClientsSnapshotServesProxylessGRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	near, far := startBackend(t, locality.Locality{Region: "r1", Zone: "z1"}), startBackend(t, locality.Locality{Region: "r1", Zone: "z2"})
	server := NewServer(ctx, nil)
	g := grpc.NewServer()
	server.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = g.Serve(lis) }()
	defer func() { g.Stop(); <-served }()

	const host = "echo.shop.svc.cluster.local"
	publish := func(version string, nearHealth registrypb.Health) {
		t.Helper()
		svc := &registry.Service{Hostname: host, Ports: []*registry.Port{{Name: "grpc", Number: 9090}}}
		for _, b := range []struct {
			b *backend
			h registrypb.Health
		}{{near, nearHealth}, {far, registrypb.Health_HEALTHY}} {
			h, p, _ := net.SplitHostPort(b.b.addr)
			port, _ := strconv.Atoi(p)
			svc.Endpoints = append(svc.Endpoints, &registry.Endpoint{
				Address: h, Ports: map[string]uint32{"grpc": uint32(port)}, Network: "n",
				Locality: b.b.locality.Proto(), Health: b.h,
			})
		}
		clients, err := BuildClients(ClientsInput{
			Version: version, Cluster: "c", Network: "n", Locality: locality.Locality{Region: "r1", Zone: "z1"},
			Views:  []ClusterView{{Name: "c", Info: &registry.ClusterInfo{Network: "n"}, Services: []*registry.Service{svc}}},
			Policy: failoverPolicy,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := server.UpdateClients(ctx, clients.Snapshot); err != nil {
			t.Fatal(err)
		}
	}
	gw, err := Build(labInput(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := server.Update(ctx, gw); err != nil {
		t.Fatal(err)
	}
	publish("1", registrypb.Health_HEALTHY)

	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": %q},
		"certificate_providers": {%q: {"plugin_name": "file_watcher", "config": {"certificate_file": "cert.pem", "private_key_file": "key.pem", "ca_certificate_file": "ca.pem"}}}
	}`, lis.Addr().String(), ClientNodePrefix+"10.0.0.9~echo-client.shop~shop.svc.cluster.local", CertificateProvider)
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///"+host+":9090", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	answeredBy := func() string {
		t.Helper()
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		var p peer.Peer
		if _, err := client.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true), grpc.Peer(&p)); err != nil {
			t.Fatal(err)
		}
		return p.Addr.String()
	}
	for range 50 {
		if got := answeredBy(); got != near.addr {
			t.Fatalf("answered by %s, want the same zone's %s at priority 0", got, near.addr)
		}
	}
	// The near endpoint is UNHEALTHY in EDS: gRPC moves to priority 1.
	publish("2", registrypb.Health_UNHEALTHY)
	for answeredBy() != far.addr {
	}
	for range 50 {
		if got := answeredBy(); got != far.addr {
			t.Fatalf("answered by %s, want %s with the near endpoint unhealthy", got, far.addr)
		}
	}

	// A gateway node on the same server gets the gateways' snapshot.
	gconn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer gconn.Close()
	tables := make(chan *xdsclient.Table, 16)
	gctx, gcancel := context.WithCancel(ctx)
	gdone := make(chan error, 1)
	go func() {
		gdone <- xdsclient.NewClient(xdsclient.ClientConfig{Conn: gconn, NodeID: "gw-1", OnUpdate: func(tb *xdsclient.Table) { tables <- tb }}).Run(gctx)
	}()
	defer func() { gcancel(); <-gdone }()
	select {
	case tb := <-tables:
		if _, ok := tb.Lookup(ClusterName(8081, "", "payment.shop.svc.cluster.local")); !ok {
			t.Fatalf("the gateway's table lacks payment: %v", tb.Routes)
		}
		if _, ok := tb.Lookup(ClusterName(9090, "", host)); ok {
			t.Fatal("the gateway got the clients' configuration")
		}
	case <-ctx.Done():
		t.Fatal("the gateway got no table")
	}
}
