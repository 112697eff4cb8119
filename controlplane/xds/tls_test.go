package xds

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlspb "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
)

// Every client cluster carries an UpstreamTlsContext: the provider
// instance the bootstrap defines, the cluster name as SNI, and exact SAN
// matchers on the SPIFFE IDs of the cluster's endpoints (its subset's
// only). A gateway's clusters carry none: the gateway passes TLS through.
func TestClientClustersCarryUpstreamTLS(t *testing.T) {
	views := clientViews()
	for _, v := range views[:2] {
		for j, ep := range v.Services[0].Endpoints {
			ep.SpiffeId = fmt.Sprintf("spiffe://%s.shop/ns/shop/sa/order-v%d", v.Name, j+1)
		}
	}
	out, err := BuildClients(ClientsInput{
		Version: "1", Cluster: "west", Network: "net-west", Views: views,
		Subsets: map[string][]Subset{orderHost: {{Name: "v2", Labels: map[string]string{"version": "v2"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		subset string
		want   []string
	}{
		{"", []string{"spiffe://central.shop/ns/shop/sa/order-v1", "spiffe://east.shop/ns/shop/sa/order-v1", "spiffe://east.shop/ns/shop/sa/order-v2"}},
		{"v2", []string{"spiffe://east.shop/ns/shop/sa/order-v2"}},
	} {
		name := ClusterName(9090, tc.subset, orderHost)
		c := out.Snapshot.GetResources(resourcev3.ClusterType)[name].(*clusterpb.Cluster)
		ts := c.GetTransportSocket()
		if ts.GetName() != "envoy.transport_sockets.tls" {
			t.Fatalf("%s: transport socket %q, want envoy.transport_sockets.tls", name, ts.GetName())
		}
		up := &tlspb.UpstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(up); err != nil {
			t.Fatal(err)
		}
		common := up.GetCommonTlsContext()
		validation := common.GetCombinedValidationContext().GetDefaultValidationContext()
		if up.GetSni() != name || common.GetTlsCertificateProviderInstance().GetInstanceName() != CertificateProvider ||
			validation.GetCaCertificateProviderInstance().GetInstanceName() != CertificateProvider {
			t.Fatalf("%s: %v, want SNI %s and provider %q for identity and roots", name, up, name, CertificateProvider)
		}
		var got []string
		//lint:ignore SA1019 the field grpc-go reads
		for _, m := range validation.GetMatchSubjectAltNames() {
			got = append(got, m.GetExact())
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: SAN matchers %v, want %v", name, got, tc.want)
		}
	}
	gw, err := Build(labInput(t))
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range gw.GetResources(resourcev3.ClusterType) {
		if r.(*clusterpb.Cluster).GetTransportSocket() != nil {
			t.Errorf("gateway cluster %s has a transport socket; the gateway passes TLS through", name)
		}
	}
}

// A grpc-go channel with xDS credentials does mTLS as CDS says: it
// presents the SVID from the bootstrap's file_watcher files and accepts
// only the SPIFFE ID EDS's endpoints carry. Of two backends, the one that
// presents another identity never answers.
func TestProxylessMTLSChecksSPIFFEIDs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	td := spiffeid.RequireTrustDomainFromString("east.shop")
	ca, err := trust.NewAuthority(td, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(path string) *trust.Credential {
		c, err := ca.IssueCredential(spiffeid.RequireFromPath(td, path), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	bundle := trust.Bundle(td, ca.Bundle().X509Authorities()...)
	echo := spiffeid.RequireFromPath(td, "/ns/shop/sa/echo")
	good := startTLSBackend(t, issue("/ns/shop/sa/echo"), bundle)
	impostor := startTLSBackend(t, issue("/ns/shop/sa/impostor"), bundle)

	srv, addr := serveADS(t, ctx)
	const host = "echo.shop.svc.cluster.local"
	svc := &registry.Service{Hostname: host, Namespace: "shop", Name: "echo", Ports: []*registry.Port{{Name: "grpc", Number: 9090}}}
	for _, b := range []*tlsBackend{good, impostor} {
		h, p, _ := net.SplitHostPort(b.addr)
		port, _ := strconv.Atoi(p)
		// Both claim echo's identity in the registry.
		svc.Endpoints = append(svc.Endpoints, &registry.Endpoint{Address: h, Ports: map[string]uint32{"grpc": uint32(port)},
			Network: "n", Health: registrypb.Health_HEALTHY, SpiffeId: echo.String()})
	}
	c, err := BuildClients(ClientsInput{Version: "1", Cluster: "east", Network: "n",
		Views: []ClusterView{{Name: "east", Info: &registry.ClusterInfo{Network: "n"}, Services: []*registry.Service{svc}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.UpdateClients(ctx, c.Snapshot); err != nil {
		t.Fatal(err)
	}

	client := issue("/ns/shop/sa/client")
	dir := t.TempDir()
	pem, err := client.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	// One file holds chain and key: grpc-go's file_watcher reads each
	// part from it.
	if err := os.WriteFile(filepath.Join(dir, "svid.pem"), pem, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "roots.pem"), trust.EncodeCertificates(ca.Bundle().X509Authorities()...), 0o644); err != nil {
		t.Fatal(err)
	}
	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "sidecar~10.0.0.9~client.shop~shop.svc.cluster.local"},
		"certificate_providers": {%q: {"plugin_name": "file_watcher", "config": {
			"certificate_file": %q, "private_key_file": %q, "ca_certificate_file": %q}}}
	}`, addr, CertificateProvider, filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.pem"), filepath.Join(dir, "roots.pem"))
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///"+host+":9090", grpc.WithTransportCredentials(creds), grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for i := range 100 {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		var p peer.Peer
		_, err := hc.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true), grpc.Peer(&p))
		ccancel()
		if err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
		if p.Addr.String() != good.addr {
			t.Fatalf("RPC %d answered by %s, want only %s (the other presents another SPIFFE ID)", i, p.Addr, good.addr)
		}
		info, _ := p.AuthInfo.(credentials.TLSInfo)
		if info.SPIFFEID == nil || info.SPIFFEID.String() != echo.String() {
			t.Fatalf("RPC %d: server identity %v, want %s", i, info.SPIFFEID, echo)
		}
	}
	if got := good.callers(); len(got) != 1 || got[0] != client.ID().String() {
		t.Fatalf("the backend saw callers %v, want only the client's SVID %s", got, client.ID())
	}
}

// tlsBackend is a gRPC health server that requires an SVID of its bundle's
// trust domain and records the callers' IDs.
type tlsBackend struct {
	addr string

	mu  sync.Mutex // guards ids
	ids map[string]bool
}

func (b *tlsBackend) callers() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for id := range b.ids {
		out = append(out, id)
	}
	return out
}

func startTLSBackend(t *testing.T, cred *trust.Credential, bundle x509bundle.Source) *tlsBackend {
	t.Helper()
	b := &tlsBackend{ids: make(map[string]bool)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = lis.Addr().String()
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(trust.MTLSServer(cred, bundle, tlsconfig.AuthorizeAny(), nil))),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if id, err := trust.PeerID(ctx); err == nil {
				b.mu.Lock()
				b.ids[id.String()] = true
				b.mu.Unlock()
			}
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, grpchealth.NewServer())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return b
}
