package member_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Identity and trust across clusters: every test runs a real hub and real
// members on loopback, and real TLS handshakes between workloads.

var (
	eastTD    = spiffeid.RequireTrustDomainFromString("east.shop")
	westTD    = spiffeid.RequireTrustDomainFromString("west.shop")
	centralTD = spiffeid.RequireTrustDomainFromString("central.shop")
)

// federate starts the named clusters, publishes each one's ClusterInfo (and
// so its bundle) and waits until every member holds every bundle at the
// owner's sequence.
func federate(t *testing.T, tm *testMesh, configure map[string]func(*MemberConfig), names ...string) map[string]*testMember {
	t.Helper()
	out := make(map[string]*testMember)
	for _, name := range names {
		tm.join(name)
		out[name] = tm.startMemberWith(name, configure[name])
	}
	for _, name := range names {
		out[name].update(t)
	}
	eventually(t, 15*time.Second, "every member holds every member's bundle", func() bool {
		for _, m := range out {
			for _, owner := range out {
				td := owner.member.Authority().TrustDomain()
				got, ok := m.member.Bundles().Sequence(td)
				if !ok || got != owner.member.Authority().Status().Sequence {
					return false
				}
			}
		}
		return true
	})
	return out
}

// logBuffer collects slog text output from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// line returns the first logged line that contains every part.
func (b *logBuffer) line(parts ...string) (string, bool) {
	for l := range strings.Lines(b.String()) {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return strings.TrimSpace(l), true
		}
	}
	return "", false
}

// wantLogged waits until a line with every part is logged.
func (b *logBuffer) wantLogged(t *testing.T, parts ...string) string {
	t.Helper()
	var got string
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if l, ok := b.line(parts...); ok {
			got = l
			break
		}
		select {
		case <-deadline.C:
			t.Fatalf("no log line with %q; log:\n%s", parts, b.String())
		case <-tick.C:
		}
	}
	return got
}

// issueSVID issues a workload SVID with a fresh key.
func issueSVID(t testing.TB, a *trust.Authority, id string, ttl time.Duration) *trust.Credential {
	t.Helper()
	cred, err := a.IssueCredential(spiffeid.RequireFromString(id), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// startWorkload runs a TLS server on loopback that writes "ok" to every
// client whose handshake succeeds. It stops with the test.
func startWorkload(t *testing.T, conf *tls.Config) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				tc := tls.Server(c, conf)
				if tc.Handshake() == nil {
					_, _ = tc.Write([]byte("ok"))
				}
			}()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		wg.Wait()
	})
	return lis.Addr().String()
}

// handshake opens a new TLS connection and waits for the server's "ok",
// which it writes only after accepting the client: in TLS 1.3 the client
// finishes its handshake before the server has checked its certificate.
// It returns the server's leaf.
func handshake(ctx context.Context, addr string, conf *tls.Config) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: conf}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, err
	}
	if string(buf) != "ok" {
		return nil, errors.New("server did not greet")
	}
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

func TestTrustFederatedMTLSAcrossClusters(t *testing.T) {
	t.Parallel()
	tm := newTestMesh(t, testTimers)
	ms := federate(t, tm, nil, "east", "west", "central")
	ctx := deadlineContext(t, 30*time.Second)
	want := []spiffeid.TrustDomain{centralTD, eastTD, westTD}
	for name, m := range ms {
		if got := m.member.Bundles().TrustDomains(); !slices.Equal(got, want) {
			t.Fatalf("%s holds bundles of %v, want %v", name, got, want)
		}
	}
	east, west, central := ms["east"].member, ms["west"].member, ms["central"].member

	order := "spiffe://east.shop/ns/shop/sa/order"
	westFrontend := spiffeid.RequireFromString("spiffe://west.shop/ns/shop/sa/frontend")
	centralFrontend := spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/frontend")
	var serverLog, clientLog logBuffer
	serverConf := trust.MTLSServer(issueSVID(t, east.Authority(), order, time.Hour), east.Bundles(),
		tlsconfig.AuthorizeOneOf(westFrontend, centralFrontend), serverLog.logger())
	addr := startWorkload(t, serverConf)
	client := func(cred *trust.Credential, bundles x509bundle.Source) *tls.Config {
		return trust.MTLSClient(cred, bundles, tlsconfig.AuthorizeID(spiffeid.RequireFromString(order)), clientLog.logger())
	}

	// Workloads of the other clusters reach east's server, each verifying
	// with its own member's bundles.
	for _, c := range []struct {
		name string
		conf *tls.Config
	}{
		{"west", client(issueSVID(t, west.Authority(), westFrontend.String(), time.Hour), west.Bundles())},
		{"central", client(issueSVID(t, central.Authority(), centralFrontend.String(), time.Hour), central.Bundles())},
	} {
		leaf, err := handshake(ctx, addr, c.conf)
		if err != nil {
			t.Fatalf("%s to east: %v\nserver log:\n%s", c.name, err, serverLog.String())
		}
		if id, _ := x509svid.IDFromCert(leaf); id.String() != order {
			t.Fatalf("%s reached %s, want %s", c.name, id, order)
		}
	}
	if s := serverLog.String() + clientLog.String(); s != "" {
		t.Fatalf("successful handshakes logged refusals:\n%s", s)
	}

	rogue, err := trust.NewAuthority(spiffeid.RequireTrustDomainFromString("rogue.shop"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// West's own root, but a clock two hours behind: an SVID that chains
	// to a federated root and has expired.
	westState, err := west.Authority().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	westPast, err := trust.LoadAuthority(westTD, westState, func() time.Time { return time.Now().Add(-2 * time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	expired := issueSVID(t, westPast, westFrontend.String(), 10*time.Minute)
	if !expired.Expiry().Before(time.Now()) {
		t.Fatalf("expired SVID is valid until %s", expired.Expiry())
	}
	for _, c := range []struct {
		name   string
		cred   *trust.Credential
		reason string
	}{
		{"unfederated trust domain", issueSVID(t, rogue, "spiffe://rogue.shop/ns/shop/sa/frontend", time.Hour), "trust domain is not federated"},
		{"expired certificate", expired, "certificate has expired"},
		{"ID the authorizer does not allow", issueSVID(t, west.Authority(), "spiffe://west.shop/ns/shop/sa/intruder", time.Hour), "unexpected ID"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := handshake(ctx, addr, client(c.cred, west.Bundles())); err == nil {
				t.Fatalf("east's server accepted %s", c.cred.ID())
			}
			l := serverLog.wantLogged(t, `msg="refused TLS client"`, "peer_id="+c.cred.ID().String()+" ", c.reason)
			t.Logf("logged: %s", l)
		})
	}

	// The dialing side refuses and logs as well: a server of an
	// unfederated trust domain.
	rogueAddr := startWorkload(t, trust.MTLSServer(issueSVID(t, rogue, "spiffe://rogue.shop/ns/shop/sa/order", time.Hour), trust.NewBundleSet(rogue.Bundle(), west.Authority().Bundle()), tlsconfig.AuthorizeAny(), nil))
	conf := trust.MTLSClient(issueSVID(t, west.Authority(), westFrontend.String(), time.Hour), west.Bundles(), tlsconfig.AuthorizeAny(), clientLog.logger())
	if _, err := handshake(ctx, rogueAddr, conf); err == nil {
		t.Fatal("west's client accepted a server of rogue.shop")
	}
	t.Logf("logged: %s", clientLog.wantLogged(t, `msg="refused TLS server"`, "peer_id=spiffe://rogue.shop/ns/shop/sa/order ", "trust domain is not federated"))

	// The refusals did not disturb the federated path.
	if _, err := handshake(ctx, addr, client(issueSVID(t, central.Authority(), centralFrontend.String(), time.Hour), central.Bundles())); err != nil {
		t.Fatalf("central to east after the refusals: %v", err)
	}
}

// controlPlaneAs connects to a member's ControlPlane API with a workload
// SVID, trusting the mesh CA for the member's own credential.
func controlPlaneAs(t *testing.T, tm *testMesh, m *testMember, cred *trust.Credential) hubpb.ControlPlaneClient {
	t.Helper()
	var conf *tls.Config
	bundle := trust.Bundle(tm.hub.td, hubCA(t, tm))
	server := tlsconfig.AuthorizeID(ClusterID(tm.hub.td, m.name))
	if cred == nil {
		conf = tlsconfig.TLSClientConfig(bundle, server)
	} else {
		conf = trust.ClientTLS(cred, bundle, server)
	}
	return hubpb.NewControlPlaneClient(dialWith(t, m.member.Addr(), credentials.NewTLS(conf)))
}

// controlPlaneWithFiles connects as 'federate' does, with a data
// directory's credential.
func controlPlaneWithFiles(t *testing.T, addr, dir string) hubpb.ControlPlaneClient {
	t.Helper()
	conn, err := Dial(addr, filepath.Join(dir, CredentialFile), filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return hubpb.NewControlPlaneClient(conn)
}

func newCSR(t testing.TB) ([]byte, *x509.CertificateRequest) {
	t.Helper()
	key, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := trust.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return der, csr
}

// lifetime is how long a certificate was issued for: the CA backdates
// NotBefore by trust.Backdate.
func lifetime(c *x509.Certificate) time.Duration {
	return c.NotAfter.Sub(c.NotBefore.Add(trust.Backdate))
}

func TestTrustSignCertificateAPI(t *testing.T) {
	t.Parallel()
	tm := newTestMesh(t, testTimers)
	ms := federate(t, tm, nil, "east", "west")
	east, west := ms["east"], ms["west"]
	ctx := deadlineContext(t, 30*time.Second)

	asEast := controlPlaneWithFiles(t, east.member.Addr(), east.dir)
	asWorkload := controlPlaneAs(t, tm, east, issueSVID(t, east.member.Authority(), "spiffe://east.shop/ns/shop/sa/order", time.Hour))
	csr, req := newCSR(t)

	// issued checks a response: the asked-for ID, the CSR's key, the
	// lifetime, and a chain to east's bundle as east and west hold it.
	issued := func(t *testing.T, resp *hubpb.SignCertificateResponse, id string, life time.Duration) {
		t.Helper()
		certs, err := trust.ParseCertificates(resp.GetCertificates())
		if err != nil {
			t.Fatal(err)
		}
		leaf := certs[0]
		if got, err := x509svid.IDFromCert(leaf); err != nil || got.String() != id {
			t.Fatalf("issued %v (%v), want %s", got, err, id)
		}
		if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(req.PublicKey) {
			t.Fatal("issued certificate is not for the CSR's key")
		}
		if got := lifetime(leaf); got < life-time.Second || got > life+time.Second {
			t.Fatalf("issued for %s, want %s", got, life)
		}
		for name, m := range map[string]*testMember{"east": east, "west": west} {
			if _, _, err := x509svid.Verify(certs, m.member.Bundles()); err != nil {
				t.Fatalf("issued certificate does not chain to east's bundle as %s holds it: %v", name, err)
			}
		}
	}

	t.Run("cluster credential", func(t *testing.T) {
		for _, id := range []string{"spiffe://east.shop/ns/shop/sa/order", "spiffe://east.shop/ns/other/sa/x", "spiffe://east.shop/gateway"} {
			resp, err := asEast.SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: id, TtlSeconds: 600})
			if err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			issued(t, resp, id, 10*time.Minute)
		}
		// No TTL means the default; a huge one means the cap.
		resp, err := asEast.SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: "spiffe://east.shop/ns/shop/sa/a"})
		if err != nil {
			t.Fatal(err)
		}
		issued(t, resp, "spiffe://east.shop/ns/shop/sa/a", trust.DefaultSVIDTTL)
		for _, ttl := range []int64{10 * 365 * 24 * 3600, math.MaxInt64, math.MaxInt64/int64(time.Second) + 1} {
			resp, err = asEast.SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: "spiffe://east.shop/ns/shop/sa/a", TtlSeconds: ttl})
			if err != nil {
				t.Fatalf("ttl %d: %v", ttl, err)
			}
			issued(t, resp, "spiffe://east.shop/ns/shop/sa/a", trust.MaxSVIDTTL)
		}
		_, err = asEast.SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: "spiffe://west.shop/ns/shop/sa/order"})
		st := wantCode(t, err, "east's credential asks for a west ID", codes.PermissionDenied)
		if !strings.Contains(st.Message(), "outside trust domain east.shop") {
			t.Fatalf("unclear message: %q", st.Message())
		}
	})

	t.Run("workload", func(t *testing.T) {
		resp, err := asWorkload.SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: "spiffe://east.shop/ns/shop/sa/cart", TtlSeconds: 60})
		if err != nil {
			t.Fatal(err)
		}
		issued(t, resp, "spiffe://east.shop/ns/shop/sa/cart", time.Minute)
		for _, c := range []struct{ id, msg string }{
			{"spiffe://east.shop/ns/other/sa/cart", `may request IDs only in namespace "shop"`},
			{"spiffe://east.shop/ns/shopping/sa/cart", `may request IDs only in namespace "shop"`},
			{"spiffe://east.shop/gateway", `may request IDs only in namespace "shop"`},
			{"spiffe://west.shop/ns/shop/sa/cart", "is outside trust domain east.shop"},
		} {
			_, err := asWorkload.SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: c.ID})
			st := wantCode(t, err, "workload asks for "+c.ID, codes.PermissionDenied)
			if !strings.Contains(st.Message(), c.msg) {
				t.Fatalf("%s: message %q does not say %q", c.ID, st.Message(), c.msg)
			}
		}
	})

	t.Run("other callers", func(t *testing.T) {
		id := "spiffe://east.shop/ns/shop/sa/order"
		for name, client := range map[string]hubpb.ControlPlaneClient{
			"west's cluster credential": controlPlaneWithFiles(t, east.member.Addr(), west.dir),
			"a federated west workload": controlPlaneAs(t, tm, east, issueSVID(t, west.member.Authority(), "spiffe://west.shop/ns/shop/sa/order", time.Hour)),
		} {
			_, err := client.SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: id})
			wantCode(t, err, name, codes.PermissionDenied)
		}
		_, err := controlPlaneAs(t, tm, east, nil).SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: id})
		wantCode(t, err, "no client certificate", codes.Unauthenticated)
	})

	t.Run("malformed requests", func(t *testing.T) {
		tampered := slices.Clone(csr)
		tampered[len(tampered)-1] ^= 0xff
		for _, c := range []struct {
			name string
			req  *hubpb.SignCertificateRequest
			msg  string
		}{
			{"garbage CSR", &hubpb.SignCertificateRequest{Csr: []byte("not a certificate request"), SpiffeId: "spiffe://east.shop/ns/shop/sa/order"}, "parse certificate request"},
			{"empty CSR", &hubpb.SignCertificateRequest{SpiffeId: "spiffe://east.shop/ns/shop/sa/order"}, "parse certificate request"},
			{"bad CSR signature", &hubpb.SignCertificateRequest{Csr: tampered, SpiffeId: "spiffe://east.shop/ns/shop/sa/order"}, "certificate request"},
			{"malformed ID", &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: "east.shop/ns/shop"}, "spiffe_id"},
		} {
			for caller, client := range map[string]hubpb.ControlPlaneClient{"cluster": asEast, "workload": asWorkload} {
				_, err := client.SignCertificate(ctx, c.req)
				st := wantCode(t, err, caller+": "+c.name, codes.InvalidArgument)
				if !strings.Contains(st.Message(), c.msg) {
					t.Fatalf("%s: message %q does not say %q", c.name, st.Message(), c.msg)
				}
			}
		}
	})
}

// csrCaller is who calls SignCertificate in the fuzz target.
type csrCaller struct {
	name     string
	ctx      context.Context
	workload bool // limited to namespace "shop"
	allowed  bool // may be issued anything at all
}

// newCSRMember loads a member for east without running it: its CA is ready
// for SignCertificate, called in-process.
func newCSRMember(tb testing.TB) (*Member, []csrCaller) {
	tb.Helper()
	shop := spiffeid.RequireTrustDomainFromString("shop")
	now := time.Now()
	meshCA, err := trust.NewCA(shop, now)
	if err != nil {
		tb.Fatal(err)
	}
	clusterCred := func(cluster string) *trust.Credential {
		key, err := trust.GenerateKey()
		if err != nil {
			tb.Fatal(err)
		}
		leaf, err := meshCA.Issue(ClusterID(shop, cluster), key.Public(), time.Hour, now, cluster+".shop")
		if err != nil {
			tb.Fatal(err)
		}
		cred, err := trust.NewCredential([]*x509.Certificate{leaf, meshCA.Cert}, key)
		if err != nil {
			tb.Fatal(err)
		}
		return cred
	}
	st, err := store.Open(filepath.Join(tb.TempDir(), "controlplane.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	m, err := NewMember(MemberConfig{
		Mesh: "shop", Cluster: "east", Hub: "127.0.0.1:1", CA: []*x509.Certificate{meshCA.Cert},
		Credential: clusterCred("east"), Store: st, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.load(ctx); err != nil {
		tb.Fatal(err)
	}
	west, err := trust.NewAuthority(westTD, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := m.Bundles().Update(west.Bundle()); err != nil {
		tb.Fatal(err)
	}
	// Each caller's certificate is verified as the member's server would.
	verified := func(cred *trust.Credential) context.Context {
		bundles := trust.UnionBundles{trust.Bundle(shop, meshCA.Cert), m.Bundles()}
		svid, _ := cred.GetX509SVID()
		_, chains, err := x509svid.Verify(svid.Certificates, bundles)
		if err != nil {
			tb.Fatal(err)
		}
		info := credentials.TLSInfo{
			State:          tls.ConnectionState{Version: tls.VersionTLS13, HandshakeComplete: true, PeerCertificates: svid.Certificates, VerifiedChains: chains},
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		}
		return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, AuthInfo: info})
	}
	return m, []csrCaller{
		{name: "east's cluster credential", ctx: verified(m.cfg.Credential), allowed: true},
		{name: "east workload in shop", ctx: verified(issueSVID(tb, m.Authority(), "spiffe://east.shop/ns/shop/sa/order", time.Hour)), workload: true, allowed: true},
		{name: "east workload without namespace", ctx: verified(issueSVID(tb, m.Authority(), "spiffe://east.shop/gateway", time.Hour))},
		{name: "west's cluster credential", ctx: verified(clusterCred("west"))},
		{name: "west workload", ctx: verified(issueSVID(tb, west, "spiffe://west.shop/ns/shop/sa/order", time.Hour))},
		{name: "no peer", ctx: context.Background()},
	}
}

func FuzzSignCertificateRequest(f *testing.F) {
	m, callers := newCSRMember(f)
	csr, _ := newCSR(f)
	tampered := slices.Clone(csr)
	tampered[len(tampered)/2] ^= 0x01
	for i, id := range []string{
		"spiffe://east.shop/ns/shop/sa/order",
		"spiffe://east.shop/ns/other/sa/order",
		"spiffe://east.shop/ns/shop",
		"spiffe://east.shop/ns/shopping/sa/x",
		"spiffe://east.shop",
		"spiffe://EAST.shop/ns/shop/sa/order",
		"spiffe://east.shop/ns/shop/../other",
		"spiffe://west.shop/ns/shop/sa/order",
		"spiffe://east.shop.evil/ns/shop/sa/order",
		"spiffe://shop/cluster/east",
		"spiffe://east.shop/ns/shop/sa/order?x=1",
		"",
		"\x00",
	} {
		for j, der := range [][]byte{csr, tampered, nil, []byte("garbage"), csr[:len(csr)/2]} {
			f.Add(der, id, int64(i*j*997), uint8(i+j))
		}
	}
	f.Add(csr, "spiffe://east.shop/ns/shop/sa/order", int64(math.MaxInt64), uint8(0))
	f.Add(csr, "spiffe://east.shop/ns/shop/sa/order", int64(-1), uint8(1))
	f.Fuzz(func(t *testing.T, der []byte, id string, ttl int64, who uint8) {
		c := callers[int(who)%len(callers)]
		resp, err := m.SignCertificate(c.ctx, &hubpb.SignCertificateRequest{Csr: der, SpiffeId: id, TtlSeconds: ttl})
		if err != nil {
			switch status.Code(err) {
			case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated:
			default:
				t.Fatalf("%s asking for %q: %v", c.name, id, err)
			}
			return
		}
		if !c.allowed {
			t.Fatalf("%s was issued %q", c.name, id)
		}
		certs, err := trust.ParseCertificates(resp.GetCertificates())
		if err != nil {
			t.Fatalf("issued certificates do not parse: %v", err)
		}
		got, err := x509svid.IDFromCert(certs[0])
		if err != nil {
			t.Fatalf("issued certificate is not an SVID: %v", err)
		}
		if !got.MemberOf(eastTD) || got.String() != id {
			t.Fatalf("%s asked for %q and was issued %s", c.name, id, got)
		}
		if c.workload && namespaceOf(got) != "shop" {
			t.Fatalf("a workload of namespace shop was issued %s", got)
		}
		if _, _, err := x509svid.Verify(certs, m.Bundles()); err != nil {
			t.Fatalf("issued certificate does not verify against east's bundle: %v", err)
		}
		want := trust.DefaultSVIDTTL
		if ttl > 0 {
			want = trust.MaxSVIDTTL
			if ttl < int64(trust.MaxSVIDTTL/time.Second) {
				want = time.Duration(ttl) * time.Second
			}
		}
		if life := lifetime(certs[0]); life < want-time.Second || life > want+time.Second {
			t.Fatalf("ttl_seconds %d issued a certificate for %s, want %s", ttl, life, want)
		}
	})
}

// renewer keeps a workload SVID current from its cluster's CA, renewing
// after a third of its lifetime, so that a loaded machine still renews in
// time.
type renewer struct {
	authority *trust.Authority
	id        spiffeid.ID
	cred      *trust.Credential
	renewals  atomic.Int64
	err       atomic.Pointer[error]
}

// newRenewer issues the first SVID with ttl; renewals ask for an hour,
// which the CA caps.
func newRenewer(t *testing.T, a *trust.Authority, id string, ttl time.Duration) *renewer {
	r := &renewer{authority: a, id: spiffeid.RequireFromString(id)}
	r.cred = issueSVID(t, a, id, ttl)
	return r
}

func (r *renewer) run(ctx context.Context) {
	issued := time.Now()
	for {
		leaf := r.cred.Leaf()
		t := time.NewTimer(time.Until(issued.Add(leaf.NotAfter.Sub(issued) / 3)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		key, err := trust.GenerateKey()
		if err == nil {
			issued = time.Now()
			var chain []*x509.Certificate
			if chain, err = r.authority.Issue(r.id, key.Public(), time.Hour); err == nil {
				err = r.cred.Set(chain, key)
			}
		}
		if err != nil {
			r.err.Store(&err)
			return
		}
		r.renewals.Add(1)
	}
}

// handshakeStats counts a client's connections.
type handshakeStats struct {
	attempts, failed atomic.Int64
	mu               sync.Mutex // guards the fields below
	firstErrs        []error
	issuers          map[string]int // server leaf's authority key ID -> connections
}

func (s *handshakeStats) record(leaf *x509.Certificate, err error) {
	s.attempts.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.failed.Add(1)
		if len(s.firstErrs) < 5 {
			s.firstErrs = append(s.firstErrs, err)
		}
		return
	}
	s.issuers[string(leaf.AuthorityKeyId)]++
}

func TestTrustRootRotationWithoutFailedHandshakes(t *testing.T) {
	t.Parallel()
	const maxTTL = 4 * time.Second
	tm := newTestMesh(t, testTimers)
	ms := federate(t, tm, map[string]func(*MemberConfig){
		"east": func(c *MemberConfig) { c.MaxSVIDTTL = maxTTL },
	}, "east", "west")
	east, west := ms["east"].member, ms["west"].member
	ctx := deadlineContext(t, 40*time.Second)

	before := east.Authority().Bundle()
	seqBefore, _ := before.SequenceNumber()
	oldRoots := before.X509Authorities()

	// Replicas of east's server renew early, at staggered times:
	// whenever signing switches, some of them still present old-root SVIDs
	// for a while, so a root dropped too early shows as failed handshakes.
	const replicas = 8
	var servers []*renewer
	var addrs []string
	var serverLog, clientLog logBuffer
	serverID := "spiffe://east.shop/ns/shop/sa/order"
	for i := range replicas {
		r := newRenewer(t, east.Authority(), serverID, maxTTL/2+maxTTL/2*time.Duration(i)/replicas)
		if life := lifetime(r.cred.Leaf()); life > maxTTL {
			t.Fatalf("east issued an SVID for %s; MaxSVIDTTL is %s", life, maxTTL)
		}
		servers = append(servers, r)
		addrs = append(addrs, startWorkload(t, trust.MTLSServer(r.cred, east.Bundles(), tlsconfig.AuthorizeMemberOf(westTD), serverLog.logger())))
	}
	if life := lifetime(issueSVID(t, east.Authority(), serverID, time.Hour).Leaf()); life > maxTTL {
		t.Fatalf("east issued an SVID for %s; MaxSVIDTTL is %s", life, maxTTL)
	}

	runCtx, stopRun := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopRun()
			wg.Wait()
		}
	}
	t.Cleanup(stop)
	for _, r := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(runCtx)
		}()
	}
	stats := &handshakeStats{issuers: make(map[string]int)}
	for _, sa := range []string{"frontend", "checkout"} {
		conf := trust.MTLSClient(issueSVID(t, west.Authority(), "spiffe://west.shop/ns/shop/sa/"+sa, time.Hour), west.Bundles(),
			tlsconfig.AuthorizeID(spiffeid.RequireFromString(serverID)), clientLog.logger())
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-runCtx.Done():
					return
				case <-tick.C:
				}
				leaf, err := handshake(runCtx, addrs[n%len(addrs)], conf)
				if runCtx.Err() != nil {
					return // stopped mid-handshake: not a refusal
				}
				stats.record(leaf, err)
			}
		}()
	}
	// Between handshakes, every SVID a replica presents must be one that
	// west's bundles accept at that moment.
	var untrusted atomic.Int64
	var firstUntrusted atomic.Pointer[error]
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-tick.C:
			}
			for _, r := range servers {
				svid, _ := r.cred.GetX509SVID()
				if _, _, err := x509svid.Verify(svid.Certificates, west.Bundles()); err != nil {
					untrusted.Add(1)
					firstUntrusted.CompareAndSwap(nil, &err)
				}
			}
		}
	}()
	// Start once every replica renewed, so their renewals are spread out.
	eventually(t, 10*time.Second, "every replica renewed once", func() bool {
		for _, r := range servers {
			if r.renewals.Load() == 0 {
				return false
			}
		}
		return stats.attempts.Load() >= 5
	})

	stream, err := controlPlaneWithFiles(t, east.Addr(), ms["east"].dir).RotateRoot(ctx, &hubpb.RotateRootRequest{Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	var phases []string
	var last *hubpb.RotateRootProgress
	for {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("rotation stream after %v: %v", phases, err)
		}
		t.Logf("rotation: phase %s, sequence %d: %s", p.GetPhase(), p.GetBundleSequence(), p.GetMessage())
		phases = append(phases, p.GetPhase())
		last = p
	}
	if want := []string{trust.PhaseAdded, trust.PhaseSwitched, trust.PhaseStable}; !slices.Equal(phases, want) {
		t.Fatalf("rotation phases %v, want %v", phases, want)
	}
	if got := last.GetBundleSequence(); got != seqBefore+2 {
		t.Fatalf("bundle sequence went from %d to %d, want +2", seqBefore, got)
	}

	// West's view: the new sequence, and only the new root.
	eventually(t, 10*time.Second, "west holds east's final bundle", func() bool {
		seq, _ := west.Bundles().Sequence(eastTD)
		return seq == seqBefore+2
	})
	view, err := west.Bundles().GetBundleForTrustDomain(eastTD)
	if err != nil {
		t.Fatal(err)
	}
	for _, old := range oldRoots {
		if view.HasX509Authority(old) {
			t.Fatal("west still trusts east's old root")
		}
	}
	if got := view.X509Authorities(); len(got) != 1 {
		t.Fatalf("west trusts %d roots of east, want 1", len(got))
	}
	if hubView, err := tm.hub.Bundles().GetBundleForTrustDomain(eastTD); err != nil || !hubView.Equal(view) {
		t.Fatalf("hub's bundle of east differs from west's (%v)", err)
	}
	// Keep connecting a little after the old root is gone everywhere.
	after := stats.attempts.Load()
	eventually(t, 5*time.Second, "handshakes after the rotation", func() bool { return stats.attempts.Load() >= after+10 })
	stop()

	var renewals int64
	for i, r := range servers {
		if p := r.err.Load(); p != nil {
			t.Fatalf("server %d SVID renewal: %v", i, *p)
		}
		svid, _ := r.cred.GetX509SVID()
		if _, _, err := x509svid.Verify(svid.Certificates, west.Bundles()); err != nil {
			t.Fatalf("server %d SVID does not verify against east's final bundle: %v", i, err)
		}
		renewals += r.renewals.Load()
	}
	attempts, failed := stats.attempts.Load(), stats.failed.Load()
	t.Logf("handshakes attempted %d, failed %d; server SVIDs renewed %d times; server roots seen %d", attempts, failed, renewals, len(stats.issuers))
	if failed != 0 {
		t.Fatalf("%d of %d handshakes failed during the rotation, first: %v\nserver log:\n%s\nclient log:\n%s", failed, attempts, stats.firstErrs, serverLog.String(), clientLog.String())
	}
	if n := untrusted.Load(); n != 0 {
		t.Fatalf("%d times a server presented an SVID that west's bundles refuse, first: %v", n, *firstUntrusted.Load())
	}
	if attempts <= 50 {
		t.Fatalf("only %d handshakes attempted; the rotation was not exercised", attempts)
	}
	if len(stats.issuers) < 2 {
		t.Fatalf("clients saw server SVIDs of %d root(s); the test must span the switch", len(stats.issuers))
	}
}

// publishInfo signs info as cluster's record version v with cred, as a
// control plane does, and publishes it to the hub.
func publishInfo(ctx context.Context, t *testing.T, hub hubpb.HubClient, cred *trust.Credential, cluster string, v *registry.Version, info *registry.ClusterInfo) error {
	t.Helper()
	signer := registry.Signer{Cluster: cluster, Key: cred.Key(), Cert: cred.Leaf().Raw}
	sr, err := signer.Sign(&registry.Record{
		Cluster: cluster, Key: registry.InfoKey, Version: v, SignedAt: time.Now().UnixNano(),
		Body: &registrypb.Record_Info{Info: info},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = hub.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{sr}})
	return err
}

func TestTrustBadBundlesAreRefused(t *testing.T) {
	t.Parallel()
	tm := newTestMesh(t, testTimers)
	ms := federate(t, tm, nil, "east", "west")
	east, west := ms["east"], ms["west"]
	ctx := deadlineContext(t, 30*time.Second)

	// Rotate east's root part way, so that the hub holds sequence 2 and
	// east's first bundle is a real, older one.
	oldBundle := east.member.Authority().Bundle()
	oldJSON, err := oldBundle.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	stream, err := controlPlaneWithFiles(t, east.member.Addr(), east.dir).RotateRoot(ctx, &hubpb.RotateRootRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the hub holds east's switched ClusterInfo", func() bool {
		e := tm.hub.set.Entries("east")[registry.InfoKey]
		return e != nil && e.Info.GetRotationPhase() == trust.PhaseSwitched && registry.Compare(e.Version, east.member.Version("east")) == 0
	})
	held, err := tm.hub.Bundles().GetBundleForTrustDomain(eastTD)
	if err != nil {
		t.Fatal(err)
	}
	held = held.Clone()
	if seq, _ := held.SequenceNumber(); seq != 2 {
		t.Fatalf("hub holds east's bundle at sequence %d, want 2", seq)
	}
	heldWest, err := tm.hub.Bundles().GetBundleForTrustDomain(westTD)
	if err != nil {
		t.Fatal(err)
	}
	heldWest = heldWest.Clone()
	version := tm.hub.set.Version("east")
	entry := tm.hub.set.Entries("east")[registry.InfoKey]
	stored, err := tm.hub.store.Get(store.BucketRecords, store.RecordKey("east", registry.InfoKey))
	if err != nil || stored == nil {
		t.Fatalf("hub's stored ClusterInfo of east: %v", err)
	}
	westJSON, err := heldWest.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// Same sequence as held, but a different bundle: only the old root.
	sameSeq := spiffebundle.New(eastTD)
	sameSeq.SetX509Authorities(oldBundle.X509Authorities())
	sameSeq.SetSequenceNumber(2)
	sameSeqJSON, err := sameSeq.Marshal()
	if err != nil {
		t.Fatal(err)
	}

	hub := hubpb.NewHubClient(dialAsCluster(t, tm, "east"))
	cred := clusterCredential(t, tm, "east")
	next := &registry.Version{Incarnation: version.GetIncarnation(), Counter: version.GetCounter() + 1}
	for _, c := range []struct {
		name string
		edit func(*registry.ClusterInfo)
		msg  string
	}{
		{"malformed bundle JSON", func(i *registry.ClusterInfo) { i.Bundle = []byte(`{"keys": [{"kty": "EC",`) }, "bundle for east.shop"},
		{"west's trust domain", func(i *registry.ClusterInfo) {
			i.TrustDomain, i.Bundle, i.BundleSequence = "west.shop", westJSON, 1
		}, `may publish only trust domain "east.shop", not "west.shop"`},
		{"sequence regression", func(i *registry.ClusterInfo) { i.Bundle, i.BundleSequence = oldJSON, 1 }, "sequence is not newer"},
		{"same sequence, other roots", func(i *registry.ClusterInfo) { i.Bundle = sameSeqJSON }, "sequence is not newer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			info := proto.Clone(entry.Info).(*registry.ClusterInfo)
			c.edit(info)
			err := publishInfo(ctx, t, hub, cred, "east", next, info)
			st := wantCode(t, err, c.name, codes.InvalidArgument, codes.PermissionDenied)
			if !strings.Contains(st.Message(), c.msg) {
				t.Fatalf("message %q does not say %q", st.Message(), c.msg)
			}

			for td, want := range map[spiffeid.TrustDomain]*spiffebundle.Bundle{eastTD: held, westTD: heldWest} {
				got, err := tm.hub.Bundles().GetBundleForTrustDomain(td)
				if err != nil || !got.Equal(want) {
					t.Fatalf("hub's bundle of %s changed (%v)", td, err)
				}
			}
			if got := tm.hub.set.Version("east"); registry.Compare(got, version) != 0 {
				t.Fatalf("hub holds east at %s, want %s", registry.FormatVersion(got), registry.FormatVersion(version))
			}
			if got := tm.hub.set.Entries("east")[registry.InfoKey]; !proto.Equal(got.Info, entry.Info) {
				t.Fatalf("hub's ClusterInfo of east changed to %v", got.Info)
			}
			if got, err := tm.hub.store.Get(store.BucketRecords, store.RecordKey("east", registry.InfoKey)); err != nil || !bytes.Equal(got, stored) {
				t.Fatalf("hub's stored ClusterInfo of east changed (%v)", err)
			}
			if got, err := west.member.Bundles().GetBundleForTrustDomain(eastTD); err != nil || !got.Equal(held) {
				t.Fatalf("west's bundle of east changed (%v)", err)
			}
		})
	}

	// The refusals left the way open: east's next real update lands.
	east.update(t, coffeeService("east", "order", 1, 18080))
	eventually(t, 10*time.Second, "east's next update at the hub", func() bool {
		return registry.Compare(tm.hub.set.Version("east"), east.member.Version("east")) == 0
	})
}
