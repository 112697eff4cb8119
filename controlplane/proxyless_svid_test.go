package controlplane_test

import (
	"context"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
)

// grpcBackend is a service's gRPC server with its cluster's SVID: it
// requires a client SVID of a federated trust domain (server-side mTLS)
// and records the callers' IDs and certificate serials.
type grpcBackend struct {
	addr string
	stop func()

	mu      sync.Mutex // guards callers and serials
	callers map[string]int
	serials map[string]bool
}

// startGRPCBackend runs service name of cluster cp; maxAge, if set, closes
// every connection after it, so that clients handshake again.
func startGRPCBackend(t *testing.T, cp *fedtest.ControlPlane, name string, maxAge time.Duration) *grpcBackend {
	t.Helper()
	m := cp.Member()
	cred, err := m.Authority().IssueCredential(spiffeid.RequireFromPath(m.Authority().TrustDomain(), "/ns/shop/sa/"+name), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &grpcBackend{addr: lis.Addr().String(), callers: map[string]int{}, serials: map[string]bool{}}
	opts := []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(trust.MTLSServer(cred, m.Bundles(), tlsconfig.AuthorizeAny(), nil))),
		grpc.UnaryInterceptor(b.record),
	}
	if maxAge > 0 {
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: maxAge, MaxConnectionAgeGrace: maxAge}))
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, grpchealth.NewServer())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	var once sync.Once
	b.stop = func() { once.Do(func() { srv.Stop(); <-done }) }
	t.Cleanup(b.stop)
	return b
}

func (b *grpcBackend) record(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if cert, err := trust.PeerCertificate(ctx); err == nil {
		id, _ := trust.PeerID(ctx)
		b.mu.Lock()
		b.callers[id.String()]++
		b.serials[cert.SerialNumber.String()] = true
		b.mu.Unlock()
	}
	return h(ctx, req)
}

func (b *grpcBackend) seen() (callers map[string]int, serials int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.callers), len(b.serials)
}

// endpoint is b as an endpoint of service name in cluster, with locality.
func (b *grpcBackend) endpoint(cluster, name string, loc *registry.Locality) *registry.Endpoint {
	host, port, _ := net.SplitHostPort(b.addr)
	n, _ := strconv.Atoi(port)
	return &registry.Endpoint{
		Address: host, Ports: map[string]uint32{"grpc": uint32(n)}, Network: "net-" + cluster, Locality: loc,
		Health: registrypb.Health_HEALTHY, SpiffeId: "spiffe://" + cluster + ".shop/ns/shop/sa/" + name,
	}
}

// grpcService is service name of the shop namespace on port 9090.
func grpcService(name string, endpoints ...*registry.Endpoint) *registry.Service {
	return &registry.Service{
		Hostname: name + ".shop.svc.cluster.local", Namespace: "shop", Name: name,
		Ports:     []*registry.Port{{Name: "grpc", Number: 9090, Protocol: "GRPC"}},
		Endpoints: endpoints,
	}
}

// svidSerial is the serial of the SVID in a svid.pem, or "".
func svidSerial(path string) string {
	certs, err := trust.LoadCertificates(path)
	if err != nil {
		return ""
	}
	return certs[0].SerialNumber.String()
}

// The SVID mode keeps a proxyless application's files current: it renews
// the SVID at half its lifetime (6 s here) and renames the new file into
// place; a running grpc-go channel, which rereads the files every 200 ms,
// keeps calling without a failure while its backend closes every
// connection each second, so that every new handshake needs an SVID that
// has not expired.
func TestSVIDModeRenewsUnderARunningClient(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("east")
	source := fedtest.NewSource()
	cp := tm.StartControlPlane("east", controlplane.Config{Source: source, ServingNames: []string{"127.0.0.1"}, VMSVIDTTL: 6 * time.Second})
	backend := startGRPCBackend(t, cp, "order", time.Second)
	source.Set(grpcService("order", backend.endpoint("east", "order", nil)))

	cfgDir, svidDir := t.TempDir(), t.TempDir()
	tm.WorkloadBootstrap(cp, "shop", "client", "client", cfgDir)
	tm.StartSVIDAgent(cfgDir, svidDir, time.Second)
	svidPath := filepath.Join(svidDir, agent.SVIDPEMFile)
	first, err := trust.LoadCredential(svidPath)
	if err != nil {
		t.Fatal(err)
	}
	if first.ID().String() != "spiffe://east.shop/ns/shop/sa/client" {
		t.Fatalf("the SVID is %s, want the group's service account", first.ID())
	}
	for _, f := range []string{agent.BundleFile, agent.ControlPlaneCAFile} {
		if _, err := trust.LoadCertificates(filepath.Join(svidDir, f)); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	bootstrap := filepath.Join(t.TempDir(), "bootstrap.json")
	if err := os.WriteFile(bootstrap, fedtest.ProxylessBootstrap(t, fedtest.ServingAddr(cp), "shop", "client", svidDir, 200*time.Millisecond), 0o644); err != nil {
		t.Fatal(err)
	}
	caller := startCaller(t, bootstrap, "order.shop.svc.cluster.local:9090")
	begin := time.Now()
	fedtest.Eventually(t, 20*time.Second, "the caller's first RPC", func() bool {
		for _, r := range caller.since(begin, "") {
			if r.Err == "" {
				return true
			}
		}
		return false
	})
	steady := time.Now()

	serials := map[string]bool{svidSerial(svidPath): true}
	fedtest.Eventually(t, 30*time.Second, "two renewals of the SVID file, handshakes with both, and the first SVID expired", func() bool {
		if s := svidSerial(svidPath); s != "" {
			serials[s] = true
		}
		_, handshakes := backend.seen()
		return len(serials) >= 3 && handshakes >= 3 && time.Now().After(first.Expiry().Add(time.Second))
	})
	results := caller.since(steady, "")
	failed := 0
	for _, r := range results {
		if r.Err != "" {
			failed++
			if failed <= 3 {
				t.Logf("failed RPC at %s: %s", r.Start.Format(time.StampMilli), r.Err)
			}
		}
	}
	callers, handshakeSerials := backend.seen()
	t.Logf("%d RPCs over %v, %d failed; the SVID file held %d SVIDs; the backend saw %d client certificates; callers %v",
		len(results), time.Since(steady).Round(time.Millisecond), failed, len(serials), handshakeSerials, callers)
	if failed > 0 {
		t.Errorf("%d of %d RPCs failed across the renewals, want none", failed, len(results))
	}
	if len(callers) != 1 || callers["spiffe://east.shop/ns/shop/sa/client"] == 0 {
		t.Errorf("callers %v, want only the client's SVID", callers)
	}
	if last := results[len(results)-1]; last.Err != "" || last.Server != "spiffe://east.shop/ns/shop/sa/order" {
		t.Errorf("the last RPC: %+v, want answered by order's SVID", last)
	}
}
