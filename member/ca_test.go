package member_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"math"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// controlPlaneAs connects to a member's ControlPlane API with a workload
// SVID, trusting the mesh CA for the member's own credential.
func controlPlaneAs(t *testing.T, m *fedtest.Member, cred *trust.Credential) hubpb.ControlPlaneClient {
	t.Helper()
	var conf *tls.Config
	mesh := spiffeid.RequireTrustDomainFromString(m.Member.Mesh())
	bundle := trust.Bundle(mesh, m.Member.MeshCA()...)
	server := tlsconfig.AuthorizeID(membership.ClusterID(mesh, m.Name))
	if cred == nil {
		conf = tlsconfig.TLSClientConfig(bundle, server)
	} else {
		conf = trust.ClientTLS(cred, bundle, server)
	}
	conn, err := grpc.NewClient(m.Member.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return hubpb.NewControlPlaneClient(conn)
}

// controlPlaneWithFiles connects as 'federate' does, with a data
// directory's credential.
func controlPlaneWithFiles(t *testing.T, addr, dir string) hubpb.ControlPlaneClient {
	t.Helper()
	conn, err := membership.Dial(addr, filepath.Join(dir, membership.CredentialFile), filepath.Join(dir, membership.CAFile))
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
	tm := newMesh(t, testTimers)
	ms := federate(t, tm, nil, "east", "west")
	east, west := ms["east"], ms["west"]
	ctx := deadlineContext(t, 30*time.Second)

	asEast := controlPlaneWithFiles(t, east.Member.Addr(), east.Dir)
	asWorkload := controlPlaneAs(t, east, issueSVID(t, east.Member.Authority(), "spiffe://east.shop/ns/shop/sa/order", time.Hour))
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
		for name, m := range map[string]*fedtest.Member{"east": east, "west": west} {
			if _, _, err := x509svid.Verify(certs, m.Member.Bundles()); err != nil {
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
			_, err := asWorkload.SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: c.id})
			st := wantCode(t, err, "workload asks for "+c.id, codes.PermissionDenied)
			if !strings.Contains(st.Message(), c.msg) {
				t.Fatalf("%s: message %q does not say %q", c.id, st.Message(), c.msg)
			}
		}
	})

	t.Run("other callers", func(t *testing.T) {
		id := "spiffe://east.shop/ns/shop/sa/order"
		for name, client := range map[string]hubpb.ControlPlaneClient{
			"west's cluster credential": controlPlaneWithFiles(t, east.Member.Addr(), west.Dir),
			"a federated west workload": controlPlaneAs(t, east, issueSVID(t, west.Member.Authority(), "spiffe://west.shop/ns/shop/sa/order", time.Hour)),
		} {
			_, err := client.SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: id})
			wantCode(t, err, name, codes.PermissionDenied)
		}
		_, err := controlPlaneAs(t, east, nil).SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: id})
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
func newCSRMember(tb testing.TB) (*member.Member, []csrCaller) {
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
		leaf, err := meshCA.Issue(membership.ClusterID(shop, cluster), key.Public(), time.Hour, now, cluster+".shop")
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
	m, err := member.New(member.Config{
		Mesh: "shop", Cluster: "east", Hub: "127.0.0.1:1", CA: []*x509.Certificate{meshCA.Cert},
		Credential: clusterCred("east"), Store: st, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Load(ctx); err != nil {
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
		{name: "east's cluster credential", ctx: verified(m.Credential()), allowed: true},
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
		if c.workload && trust.NamespaceOf(got) != "shop" {
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
