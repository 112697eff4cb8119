package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	grpcxds "google.golang.org/grpc/xds"
	xdsbootstrap "google.golang.org/grpc/xds/bootstrap"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/locality"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
)

// The failure-domain scenario: west, east and central, each a real control
// plane (controlplane.New) behind a real gateway on its own network. order
// runs in east (r1/z2) and central (r2/z1) as TLS gRPC servers with their
// cluster's SVIDs. A proxyless gRPC client in west (r1/z1) follows west's
// client-facing xDS over mTLS and calls order continuously through the
// gateways. West's DestinationRule fails r1 over to r2, so east's gateway
// is priority 0 and central's priority 1.

const orderHost = "order.shop.svc.cluster.local"

// failoverTimers keep every cluster alive by gossip for the whole run, so
// that the gateway probes alone detect the failure.
var failoverTimers = gossip.Timers{StaleAfter: time.Minute, DeadAfter: 2 * time.Minute, ExpireAfter: time.Hour}

var failoverLocality = map[string]*registry.Locality{
	"west":    {Region: "r1", Zone: "z1"},
	"east":    {Region: "r1", Zone: "z2"},
	"central": {Region: "r2", Zone: "z1"},
}

const orderRule = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order, namespace: shop}
spec:
  host: order.shop.svc.cluster.local
  trafficPolicy:
    loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r2}]}}
    outlierDetection: {consecutiveGatewayErrors: 1, interval: 1s, baseEjectionTime: 30s}
`

type failoverScenario struct {
	tb      testing.TB
	ctx     context.Context
	tm      *fedtest.Mesh
	cps     map[string]*fedtest.ControlPlane
	sources map[string]*fedtest.Source
	gws     map[string]*fedtest.Gateway
	gwAddr  map[string]string
	byAddr  map[string]string // gateway address -> cluster

	mu      sync.Mutex // guards samples and conns
	samples []sample
	conns   []connSample
}

// sample is one RPC: when it started and ended, which cluster answered.
type sample struct {
	start, end time.Time
	cluster    string
	err        error
}

func newFailoverScenario(tb testing.TB, ctx context.Context) *failoverScenario {
	s := &failoverScenario{
		tb: tb, ctx: ctx, tm: fedtest.NewMesh(tb, failoverTimers),
		cps: map[string]*fedtest.ControlPlane{}, sources: map[string]*fedtest.Source{},
		gws: map[string]*fedtest.Gateway{}, gwAddr: map[string]string{}, byAddr: map[string]string{},
	}
	for _, name := range []string{"west", "east", "central"} {
		s.startCluster(name)
	}
	for _, name := range []string{"east", "central"} {
		s.sources[name].Set(s.orderService(name, s.startBackend(name)))
	}
	return s
}

// startCluster starts name's control plane, announcing its gateway
// (network, locality, address) and its services from a source the
// scenario sets, and then the gateway.
func (s *failoverScenario) startCluster(name string) {
	tb := s.tb
	s.tm.Join(name)
	lis := fedtest.GatewayListener(tb)
	addr := lis.Addr().String()
	s.gwAddr[name], s.byAddr[addr] = addr, name
	configDir := tb.TempDir()
	if name == "west" {
		if err := os.WriteFile(filepath.Join(configDir, "order-rule.yaml"), []byte(orderRule), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	s.sources[name] = fedtest.NewSource()
	s.cps[name] = s.tm.StartControlPlane(name, controlplane.Config{
		Gateway: addr, Locality: failoverLocality[name], ConfigDir: configDir, Source: s.sources[name],
	})
	s.gws[name] = s.startGateway(name, lis)
}

// startGateway runs name's gateway on lis with no drain: stopping it is a
// crash.
func (s *failoverScenario) startGateway(name string, lis *net.TCPListener) *fedtest.Gateway {
	return s.tm.StartGateway(s.cps[name], lis, func(c *eastwest.Config) { c.DrainTimeout = time.Millisecond })
}

// restartGateway starts name's gateway again at its address.
func (s *failoverScenario) restartGateway(name string) {
	addr, err := net.ResolveTCPAddr("tcp", s.gwAddr[name])
	if err != nil {
		s.tb.Fatal(err)
	}
	lis, err := net.ListenTCP("tcp", addr)
	if err != nil {
		s.tb.Fatal(err)
	}
	s.gws[name] = s.startGateway(name, lis)
}

// startBackend runs order as a TLS gRPC server with the cluster's SVID.
func (s *failoverScenario) startBackend(name string) string {
	tb := s.tb
	m := s.cps[name].Member()
	id := spiffeid.RequireFromPath(m.Authority().TrustDomain(), "/ns/shop/sa/order")
	cred, err := m.Authority().IssueCredential(id, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsconfig.TLSServerConfig(cred))))
	healthpb.RegisterHealthServer(srv, grpchealth.NewServer())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	tb.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// orderService is order with one endpoint, name's backend.
func (s *failoverScenario) orderService(name, backend string) *registry.Service {
	bhost, bport, _ := net.SplitHostPort(backend)
	port, _ := strconv.Atoi(bport)
	return &registry.Service{
		Hostname: orderHost, Namespace: "shop", Name: "order",
		Ports: []*registry.Port{{Name: "grpc", Number: 9090, Protocol: "GRPC"}},
		Endpoints: []*registry.Endpoint{{
			Address: bhost, Ports: map[string]uint32{"grpc": uint32(port)}, Network: "net-" + name,
			Locality: failoverLocality[name], Health: registrypb.Health_HEALTHY, SpiffeId: "spiffe://" + name + ".shop/ns/shop/sa/order",
		}},
	}
}

// mTLS channel credentials for the proxyless client's xDS stream, by key:
// grpc-go's bootstrap knows only registered credential types.
var (
	testCredsOnce sync.Once
	testCredsMu   sync.Mutex
	testCreds     = map[string]credentials.TransportCredentials{}
)

type testCredsBuilder struct{}

func (testCredsBuilder) Name() string { return "federate-test-mtls" }

func (testCredsBuilder) Build(config json.RawMessage) (credentials.Bundle, func(), error) {
	var c struct{ Key string }
	if err := json.Unmarshal(config, &c); err != nil {
		return nil, nil, err
	}
	testCredsMu.Lock()
	defer testCredsMu.Unlock()
	creds, ok := testCreds[c.Key]
	if !ok {
		return nil, nil, errors.New("no test credentials " + c.Key)
	}
	return transportBundle{creds}, func() {}, nil
}

type transportBundle struct {
	creds credentials.TransportCredentials
}

func (b transportBundle) TransportCredentials() credentials.TransportCredentials { return b.creds }
func (transportBundle) PerRPCCredentials() credentials.PerRPCCredentials         { return nil }
func (b transportBundle) NewWithMode(string) (credentials.Bundle, error)         { return b, nil }

// dialOrder connects a proxyless gRPC client in west to xds:///order:
// xDS over mTLS from west's control plane, then TLS through the gateways
// with order's SNI, accepting only order's SVIDs of east and central.
func (s *failoverScenario) dialOrder() healthpb.HealthClient {
	tb := s.tb
	west := s.cps["west"]
	testCredsOnce.Do(func() { xdsbootstrap.RegisterChannelCredentials(testCredsBuilder{}) })
	td := west.Member().Authority().TrustDomain()
	cred, err := west.Member().Authority().IssueCredential(spiffeid.RequireFromPath(td, "/ns/shop/sa/client"), time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	cas, _ := trust.LoadCertificates(filepath.Join(west.Dir, membership.CAFile))
	meshTD := spiffeid.RequireTrustDomainFromString("shop")
	key := tb.Name()
	testCredsMu.Lock()
	testCreds[key] = credentials.NewTLS(trust.ClientTLS(cred, trust.Bundle(meshTD, cas...), tlsconfig.AuthorizeID(membership.ClusterID(meshTD, "west"))))
	testCredsMu.Unlock()
	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "federate-test-mtls", "config": {"key": %q}}], "server_features": ["xds_v3"]}],
		"node": {"id": %q, "locality": {"region": "r1", "zone": "z1"}},
		"certificate_providers": {%q: {"plugin_name": "file_watcher", "config": {"certificate_file": "cert.pem", "private_key_file": "key.pem", "ca_certificate_file": "ca.pem"}}}
	}`, west.Member().Addr(), key, xds.ClientNodePrefix+"127.0.0.1~client.shop~shop.svc.cluster.local", xds.CertificateProvider)
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		tb.Fatal(err)
	}
	data := credentials.NewTLS(s.orderTLS())
	conn, err := grpc.NewClient("xds:///"+orderHost+":9090", grpc.WithTransportCredentials(data), grpc.WithResolvers(resolver))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// orderTLS is TLS to order through a gateway: order's SNI, and only
// order's SVIDs of east and central.
func (s *failoverScenario) orderTLS() *tls.Config {
	order := map[spiffeid.ID]bool{
		spiffeid.RequireFromString("spiffe://east.shop/ns/shop/sa/order"):    true,
		spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/order"): true,
	}
	bundles := s.cps["west"].Member().Bundles()
	return &tls.Config{
		ServerName: xds.ClusterName(9090, "", orderHost), MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"},
		InsecureSkipVerify: true, // the SPIFFE ID is checked below, not a host name
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, _, err := x509svid.ParseAndVerify(raw, bundles)
			if err == nil && !order[id] {
				err = fmt.Errorf("unexpected peer %s", id)
			}
			return err
		},
	}
}

// connSample is one new connection opened by pickerLoad.
type connSample struct {
	start    time.Time
	picked   string // cluster of the first endpoint tried
	attempts int
	err      error
}

// pickerLoad opens a new TLS connection to order every 5 ms, as the
// gateway and the agent do: the first endpoint from a locality.Picker over
// the priorities west serves its clients, then the others in priority
// order (connect retry). Each connection ends after its handshake.
func (s *failoverScenario) pickerLoad(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	conf := s.orderTLS()
	name := xds.ClusterName(9090, "", orderHost)
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var last *xds.Clients
		var picker *locality.Picker
		var all []string
		dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: conf}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if c := s.cps["west"].Routing().Clients(); c != last && c != nil {
				last, all = c, nil
				prio := c.Priorities[name]
				picker = locality.NewPicker(prio)
				for _, g := range prio.Groups {
					for _, e := range g.Endpoints {
						all = append(all, e.HostPort())
					}
				}
			}
			if picker == nil {
				continue
			}
			first, ok := picker.PickAddr()
			if !ok {
				continue
			}
			smp := connSample{start: time.Now(), picked: s.byAddr[first]}
			for _, addr := range append([]string{first}, slices.DeleteFunc(slices.Clone(all), func(a string) bool { return a == first })...) {
				smp.attempts++
				var c net.Conn
				if c, smp.err = dialer.DialContext(ctx, "tcp", addr); smp.err == nil {
					c.Close()
					break
				}
			}
			if ctx.Err() != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, smp)
			s.mu.Unlock()
		}
	}()
	return done
}

// load calls order continuously (every 2 ms) until ctx ends. An RPC waits
// for a ready connection (gRPC's connect retry) for up to a second.
func (s *failoverScenario) load(ctx context.Context, client healthpb.HealthClient) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			start := time.Now()
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			var p peer.Peer
			_, err := client.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true), grpc.Peer(&p))
			cancel()
			if ctx.Err() != nil {
				return
			}
			smp := sample{start: start, end: time.Now(), err: err}
			if err == nil {
				smp.cluster = s.byAddr[p.Addr.String()]
			}
			s.mu.Lock()
			s.samples = append(s.samples, smp)
			s.mu.Unlock()
		}
	}()
	return done
}

// since returns the samples that started at or after t.
func (s *failoverScenario) since(t time.Time) []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sample
	for _, smp := range s.samples {
		if !smp.start.Before(t) {
			out = append(out, smp)
		}
	}
	return out
}

// steadyOn waits until the last n RPCs after t all reached cluster.
func (s *failoverScenario) steadyOn(t time.Time, cluster string, n int, timeout time.Duration) time.Time {
	var first time.Time
	fedtest.Eventually(s.tb, timeout, fmt.Sprintf("%d RPCs in a row answered by %s", n, cluster), func() bool {
		smp := s.since(t)
		if len(smp) < n {
			return false
		}
		for _, x := range smp[len(smp)-n:] {
			if x.err != nil || x.cluster != cluster {
				return false
			}
		}
		for _, x := range smp {
			if x.err == nil && x.cluster == cluster {
				first = x.end
				break
			}
		}
		return true
	})
	return first
}

// failoverResult is what the scenario measures.
type failoverResult struct {
	detect, move, failback time.Duration
	failed                 int // RPCs that failed from the stop on
	failedAfterDetect      int // of those, started after detection
	requests               int // RPCs from the stop until traffic was back

	// The same for new connections picked by locality.Picker.
	pickMove               time.Duration // stop until the first pick of central
	conns, retried         int           // connections opened, and retried on another endpoint
	connsFailed            int
	connsFailedAfterDetect int
}

// run stops east's gateway under load, waits for traffic on central,
// restarts it and waits for traffic back on east.
func (s *failoverScenario) run() failoverResult {
	loadCtx, stopLoad := context.WithCancel(s.ctx)
	loaded := s.load(loadCtx, s.dialOrder())
	picked := s.pickerLoad(loadCtx)
	defer func() { stopLoad(); <-loaded; <-picked }()
	begin := time.Now()
	s.steadyOn(begin, "east", 100, 30*time.Second)

	west := s.cps["west"].Routing()
	stopped := time.Now()
	s.gws["east"].Stop()
	var detected time.Time
	fedtest.Eventually(s.tb, 10*time.Second, "west's probes marking east's gateway down", func() bool {
		if west.GatewayDown(s.gwAddr["east"]) {
			detected = time.Now()
			return true
		}
		return false
	})
	moved := s.steadyOn(stopped, "central", 100, 10*time.Second)
	fedtest.Eventually(s.tb, 5*time.Second, "west's status saying east's gateway is down", s.warnsGatewayDown)

	restarted := time.Now()
	s.restartGateway("east")
	back := s.steadyOn(restarted, "east", 100, 15*time.Second)

	var res failoverResult
	res.detect, res.move, res.failback = detected.Sub(stopped), moved.Sub(stopped), back.Sub(restarted)
	s.mu.Lock()
	res.pickMove = -1
	for _, c := range s.conns {
		if c.start.Before(stopped) || c.start.After(back) {
			continue
		}
		res.conns++
		if c.picked == "central" && res.pickMove < 0 {
			res.pickMove = c.start.Sub(stopped)
		}
		if c.attempts > 1 {
			res.retried++
		}
		if c.err != nil {
			res.connsFailed++
			if c.start.After(detected) {
				res.connsFailedAfterDetect++
			}
		}
	}
	s.mu.Unlock()
	for _, smp := range s.since(stopped) {
		if smp.start.After(back) {
			break
		}
		res.requests++
		if smp.err != nil {
			res.failed++
			if smp.start.After(detected) {
				res.failedAfterDetect++
			}
		}
	}
	return res
}

// Acceptance: stopping a whole cluster's gateway moves traffic to the next
// cluster within 3 s; after detection no new RPC fails; when the gateway
// returns, traffic fails back.
func TestIntegrationFailureDomainFailover(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := newFailoverScenario(t, ctx)
	res := s.run()
	t.Logf("east's gateway stopped: detected after %v, traffic on central after %v; back on east %v after restart; %d of %d RPCs failed (%d after detection)",
		res.detect, res.move, res.failback, res.failed, res.requests, res.failedAfterDetect)
	if res.move > 3*time.Second {
		t.Errorf("traffic moved to central after %v, want within 3s", res.move)
	}
	if res.detect > 3*time.Second+500*time.Millisecond {
		t.Errorf("the probes marked east's gateway down after %v, want about 3s (three misses a second apart)", res.detect)
	}
	if res.failedAfterDetect != 0 {
		t.Errorf("%d RPCs started after detection failed, want none", res.failedAfterDetect)
	}
	t.Logf("new connections by locality.Picker: first pick of central %v after the stop; %d of %d connections retried on another endpoint, %d failed (%d after detection)",
		res.pickMove, res.retried, res.conns, res.connsFailed, res.connsFailedAfterDetect)
	if res.pickMove < 0 || res.pickMove > 3*time.Second+500*time.Millisecond {
		t.Errorf("the picker moved to central after %v, want about 3s (detection, then new priorities)", res.pickMove)
	}
	if res.connsFailedAfterDetect != 0 {
		t.Errorf("%d new connections after detection failed, want none", res.connsFailedAfterDetect)
	}
	fedtest.Eventually(t, 5*time.Second, "west's status no longer saying east's gateway is down", func() bool { return !s.warnsGatewayDown() })
}

func (s *failoverScenario) warnsGatewayDown() bool {
	for _, w := range s.cps["west"].Member().StatusNow().GetPolicyWarnings() {
		if strings.Contains(w.GetMessage(), "gateway "+s.gwAddr["east"]+" of cluster east misses its probes") {
			return true
		}
	}
	return false
}

// BenchmarkFailover measures the failover window of docs/benchmarks.md:
// the scenario above under steady load (one RPC every 2 ms), once.
func BenchmarkFailover(b *testing.B) {
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		s := newFailoverScenario(b, ctx)
		res := s.run()
		cancel()
		b.ReportMetric(float64(res.detect.Milliseconds()), "detect-ms")
		b.ReportMetric(float64(res.move.Milliseconds()), "move-ms")
		b.ReportMetric(float64(res.failback.Milliseconds()), "failback-ms")
		b.ReportMetric(float64(res.failed), "failed-rpcs")
		b.ReportMetric(float64(res.failedAfterDetect), "failed-after-detect")
		b.ReportMetric(float64(res.requests), "rpcs")
		b.ReportMetric(float64(res.pickMove.Milliseconds()), "pick-move-ms")
		b.ReportMetric(float64(res.connsFailed), "failed-conns")
		b.ReportMetric(float64(res.retried), "retried-conns")
		b.ReportMetric(float64(res.conns), "conns")
	}
}
