package agent

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
)

type testDomain struct {
	td   spiffeid.TrustDomain
	auth *trust.Authority
}

func newDomain(t *testing.T, name string) testDomain {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(name)
	a, err := trust.NewAuthority(td, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return testDomain{td: td, auth: a}
}

func (d testDomain) cred(t *testing.T, path string) *trust.Credential {
	t.Helper()
	c, err := d.auth.IssueCredential(spiffeid.RequireFromPath(d.td, path), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (d testDomain) bundle() *agentpb.TrustBundle {
	tb := &agentpb.TrustBundle{TrustDomain: d.td.String()}
	for _, c := range d.auth.Bundle().X509Authorities() {
		tb.Roots = append(tb.Roots, c.Raw)
	}
	return tb
}

// serve answers each connection with prefix and the first line it reads.
func serve(t *testing.T, l net.Listener, prefix string) {
	t.Helper()
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				_, _ = io.WriteString(c, prefix+line)
			}()
		}
	}()
}

func roundTrip(c net.Conn, msg string) (string, error) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

type sidecarFixture struct {
	central, east, evil testDomain
	sidecar             *Sidecar
	outbound            string
}

func startSidecar(t *testing.T, policies Policies) *sidecarFixture {
	t.Helper()
	return startSidecarFrom(t, policies, nil)
}

// startSidecarFrom starts the fixture's sidecar with the configuration
// config makes for the application's port; nil means the one written in
// Go, with the control plane mapping barista's port. A config of its own
// gets no port mapping from the control plane: its defaultEndpoint serves.
func startSidecarFrom(t *testing.T, policies Policies, config func(appPort uint32) *SidecarConfig) *sidecarFixture {
	t.Helper()
	f := &sidecarFixture{central: newDomain(t, "central.shop"), east: newDomain(t, "east.shop"), evil: newDomain(t, "evil.example")}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, app, "barista: ")

	// payment, in east, is an mTLS server that checks the caller is a
	// central workload and that the SNI is Istio's name for it.
	paymentCred := f.east.cred(t, "/ns/shop/sa/payment")
	conf := tlsconfig.MTLSServerConfig(paymentCred, trust.UnionBundles{trust.Bundle(f.central.td, f.central.auth.Bundle().X509Authorities()...)}, tlsconfig.AuthorizeMemberOf(f.central.td))
	wantSNI := sni.Istio{Port: 8081, Host: "payment.shop.svc.cluster.local"}.String()
	conf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if hello.ServerName != wantSNI {
			t.Errorf("payment got SNI %q, want %q", hello.ServerName, wantSNI)
		}
		return nil, nil
	}
	payment, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, payment, "payment: ")

	appPort := uint32(app.Addr().(*net.TCPAddr).Port)
	cfg := &SidecarConfig{Outbound: []Outbound{{Host: "payment.shop.svc.cluster.local", Port: 8081, Listen: "127.0.0.1:0"}}}
	cfg.Inbound.Listen = "127.0.0.1:0"
	inbound := []*agentpb.Inbound{{Hostname: "barista.shop.svc.cluster.local", Port: 8083, TargetPort: appPort}}
	if config != nil {
		cfg, inbound = config(appPort), nil
	}
	bundles := NewBundles(f.central.td, f.central.auth.Bundle().X509Authorities())
	s, err := NewSidecar(cfg, f.central.cred(t, "/ns/shop/sa/barista"), bundles, policies, log)
	if err != nil {
		t.Fatal(err)
	}
	s.Update(&agentpb.AgentConfig{
		Bundles: []*agentpb.TrustBundle{f.central.bundle(), f.east.bundle()},
		Inbound: inbound,
		Upstreams: []*agentpb.Upstream{{
			Hostname: "payment.shop.svc.cluster.local",
			Ports:    []*registrypb.Port{{Name: "http", Number: 8081}},
			Targets: []*agentpb.Target{
				// A dead target first: the sidecar moves on to the next.
				{Cluster: "east", Address: "127.0.0.1", Ports: map[uint32]uint32{8081: deadPort(t)}, Health: registrypb.Health_HEALTHY, Weight: 1, SpiffeIds: []string{"spiffe://east.shop/ns/shop/sa/payment"}},
				{Cluster: "east", Address: "127.0.0.1", Ports: map[uint32]uint32{8081: uint32(payment.Addr().(*net.TCPAddr).Port)}, Health: registrypb.Health_HEALTHY, Weight: 1, SpiffeIds: []string{"spiffe://east.shop/ns/shop/sa/payment"}},
			},
		}},
	})
	f.sidecar = s
	f.outbound = s.outbounds[0].Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the sidecar did not stop")
		}
	})
	return f
}

func deadPort(t *testing.T) uint32 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return uint32(p)
}

// dialInbound calls the VM's barista as a workload with cred would.
func (f *sidecarFixture) dialInbound(cred *trust.Credential) (string, error) {
	conf := tlsconfig.MTLSClientConfig(cred, trust.UnionBundles{trust.Bundle(f.central.td, f.central.auth.Bundle().X509Authorities()...)}, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/barista")))
	conf.ServerName = sni.Istio{Port: 8083, Host: "barista.shop.svc.cluster.local"}.String()
	c, err := tls.Dial("tcp", f.sidecar.inbound.Addr().String(), conf)
	if err != nil {
		return "", err
	}
	return roundTrip(c, "one latte")
}

func TestSidecarInboundAuthorizesFederatedCallers(t *testing.T) {
	f := startSidecar(t, nil)
	got, err := f.dialInbound(f.east.cred(t, "/ns/shop/sa/order"))
	if err != nil || got != "barista: one latte\n" {
		t.Fatalf("east's order calling barista: %q, %v", got, err)
	}
	// An unfederated trust domain is refused during the handshake.
	if got, err := f.dialInbound(f.evil.cred(t, "/ns/shop/sa/order")); err == nil {
		t.Errorf("a caller from an unfederated trust domain got %q", got)
	}
}

// With the application stopped, the inbound handshake fails, so that a
// caller's sidecar moves on to its next endpoint before sending a byte.
func TestSidecarInboundRefusesHandshakeWithoutApplication(t *testing.T) {
	f := startSidecar(t, nil)
	f.sidecar.Update(&agentpb.AgentConfig{
		Bundles: []*agentpb.TrustBundle{f.central.bundle(), f.east.bundle()},
		Inbound: []*agentpb.Inbound{{Hostname: "barista.shop.svc.cluster.local", Port: 8083, TargetPort: deadPort(t)}},
	})
	conf := tlsconfig.MTLSClientConfig(f.east.cred(t, "/ns/shop/sa/order"), trust.UnionBundles{trust.Bundle(f.central.td, f.central.auth.Bundle().X509Authorities()...)}, tlsconfig.AuthorizeAny())
	conf.ServerName = sni.Istio{Port: 8083, Host: "barista.shop.svc.cluster.local"}.String()
	c, err := tls.Dial("tcp", f.sidecar.inbound.Addr().String(), conf)
	if err == nil {
		c.Close()
		t.Fatal("the handshake succeeded with the application down")
	}
}

func TestSidecarOutboundOriginatesMTLS(t *testing.T) {
	f := startSidecar(t, nil)
	c, err := net.Dial("tcp", f.outbound)
	if err != nil {
		t.Fatal(err)
	}
	got, err := roundTrip(c, "charge 4.50")
	if err != nil || got != "payment: charge 4.50\n" {
		t.Fatalf("barista calling payment through its outbound listener: %q, %v", got, err)
	}
}

// onlyOrderPolicies are barista's policies of a file that allows east's
// order on port 8083, and holds another workload's policy too.
func onlyOrderPolicies(t *testing.T) Policies {
	t.Helper()
	path := filepath.Join(t.TempDir(), AuthorizationFile)
	policy := `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-order, namespace: shop}
spec:
  selector: {matchLabels: {app: barista}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["east.shop/ns/shop/sa/order"]}}]
    to: [{operation: {ports: ["8083"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-workload, namespace: shop}
spec:
  selector: {matchLabels: {app: payment}}
  action: DENY
  rules: [{}]
`
	if err := os.WriteFile(path, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	policies, err := LoadPolicies(path, "shop", map[string]string{"app": "barista"})
	if err != nil {
		t.Fatal(err)
	}
	return policies
}

func TestSidecarAppliesAuthorizationPolicy(t *testing.T) {
	policies := onlyOrderPolicies(t)
	if len(policies) != 1 || policies[0].Name != "shop/only-order" {
		t.Fatalf("policies = %+v, want only the one that selects barista", policies)
	}
	f := startSidecar(t, policies)
	if got, err := f.dialInbound(f.east.cred(t, "/ns/shop/sa/order")); err != nil || got != "barista: one latte\n" {
		t.Errorf("the allowed principal: %q, %v", got, err)
	}
	if got, _ := f.dialInbound(f.east.cred(t, "/ns/shop/sa/inventory")); got != "" {
		t.Errorf("a principal no rule allows got %q", got)
	}
}

func TestLoadBootstrapNamesTheBadFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := LoadBootstrap(dir)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, ClusterEnvFile)) {
		t.Fatalf("no files: %v", err)
	}
	write(ClusterEnvFile, "CA_ADDR='controlplane.central.federate.internal:15443'\nISTIO_META_CLUSTER_ID=central\n")
	if _, err := LoadBootstrap(dir); err == nil || !strings.Contains(err.Error(), "ISTIO_NAMESPACE is missing") {
		t.Fatalf("incomplete cluster.env: %v", err)
	}
	write(ClusterEnvFile, strings.Join([]string{
		"CA_ADDR='controlplane.central.federate.internal:15443'", "ISTIO_META_CLUSTER_ID='central'",
		"ISTIO_NAMESPACE='shop'", "ISTIO_META_AUTO_REGISTER_GROUP='barista'", "FEDERATE_CONTROL_PLANE_ID='spiffe://shop/cluster/central'",
		"TRUST_DOMAIN='central.shop'", "SERVICE_ACCOUNT='barista'", "ISTIO_METAJSON_LABELS='{\"app\":\"barista\"}'",
	}, "\n"))
	if _, err := LoadBootstrap(dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, MeshFile)+": missing") {
		t.Fatalf("no mesh.yaml: %v", err)
	}
	write(MeshFile, "defaultConfig:\n  readinessProbe: {grpc: {port: 1}}\n")
	if _, err := LoadBootstrap(dir); err == nil || !strings.Contains(err.Error(), "grpc is not supported") {
		t.Fatalf("grpc probe: %v", err)
	}
	write(MeshFile, "defaultConfig:\n  readinessProbe: {tcpSocket: {port: 8083}, periodSeconds: 1}\n")
	write(RootCertFile, "not a certificate\n")
	if _, err := LoadBootstrap(dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, RootCertFile)) {
		t.Fatalf("bad root-cert.pem: %v", err)
	}
	write(RootCertFile, string(trust.EncodeCertificates(newDomain(t, "shop").auth.Bundle().X509Authorities()...)))
	write(HostsFile, "not-an-ip controlplane.central.federate.internal\n")
	if _, err := LoadBootstrap(dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, HostsFile)) {
		t.Fatalf("bad hosts: %v", err)
	}
	write(HostsFile, "192.0.2.10 controlplane.central.federate.internal\n")
	b, err := LoadBootstrap(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.ID.String() != "spiffe://central.shop/ns/shop/sa/barista" || b.Hosts["controlplane.central.federate.internal"] != "192.0.2.10" || b.Probe.GetTcpSocket().GetPort() != 8083 {
		t.Errorf("bootstrap = %+v", b)
	}
	if _, err := b.ReadToken(); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, TokenFile)) {
		t.Errorf("missing token: %v", err)
	}
}

// The inbound listener forwards nothing for a caller that does not prove
// a federated identity: plain text, TLS without a client certificate, a
// certificate whose ID names a federated trust domain its signer does not
// own, a trust domain the control plane stopped sending (a removed
// cluster), or bytes that are no TLS at all. The application never
// answers them, and the sidecar keeps serving.
func TestSidecarInboundRefusesUnprovenCallers(t *testing.T) {
	f := startSidecar(t, nil)
	addr := f.sidecar.inbound.Addr().String()
	central := trust.UnionBundles{trust.Bundle(f.central.td, f.central.auth.Bundle().X509Authorities()...)}
	serverOK := tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/barista"))
	serverName := sni.Istio{Port: 8083, Host: "barista.shop.svc.cluster.local"}.String()
	// answered reports what the application said, if anything, to a
	// request sent on c.
	answered := func(c net.Conn) string {
		got, _ := roundTrip(c, "one latte")
		return got
	}

	t.Run("plain text", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := answered(c); strings.Contains(got, "barista") {
			t.Errorf("a plain-text caller got %q", got)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		// A TLS handshake record header announcing 64 KiB, then junk.
		_, _ = c.Write(append([]byte{22, 3, 1, 0xff, 0xff}, make([]byte, 1<<10)...))
		if got := answered(c); strings.Contains(got, "barista") {
			t.Errorf("a caller sending junk got %q", got)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		conf := tlsconfig.TLSClientConfig(central, serverOK)
		conf.ServerName = serverName
		c, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			t.Logf("refused during the handshake: %v", err)
			return
		}
		if got := answered(c); got != "" {
			t.Errorf("a caller without a certificate got %q", got)
		}
	})
	f.sidecar.mu.Lock()
	appPort := f.sidecar.ports[8083]
	f.sidecar.mu.Unlock()
	setBundles := func(bundles ...*agentpb.TrustBundle) {
		f.sidecar.Update(&agentpb.AgentConfig{
			Bundles: bundles,
			Inbound: []*agentpb.Inbound{{Hostname: "barista.shop.svc.cluster.local", Port: 8083, TargetPort: appPort}},
		})
	}
	t.Run("east's signer claiming a central ID", func(t *testing.T) {
		// A root the sidecar trusts for east.shop signs a leaf whose ID
		// is central's cashier: it must not pass as central's.
		rogue, err := trust.NewCA(f.east.td, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		setBundles(f.central.bundle(), f.east.bundle(), &agentpb.TrustBundle{TrustDomain: "east.shop", Roots: [][]byte{rogue.Cert.Raw}})
		t.Cleanup(func() { setBundles(f.central.bundle(), f.east.bundle()) })
		sign := func(id string) *trust.Credential {
			key, err := trust.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
				KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
				URIs: []*url.URL{spiffeid.RequireFromString(id).URL()},
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, rogue.Cert, key.Public(), rogue.Key)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			cred, err := trust.NewCredential([]*x509.Certificate{leaf, rogue.Cert}, key)
			if err != nil {
				t.Fatal(err)
			}
			return cred
		}
		// The same root's leaf for its own trust domain passes, so the
		// refusal below is about the ID.
		if got, err := f.dialInbound(sign("spiffe://east.shop/ns/shop/sa/order")); err != nil || got != "barista: one latte\n" {
			t.Fatalf("an east ID signed by the east root: %q, %v", got, err)
		}
		forged := sign("spiffe://central.shop/ns/shop/sa/cashier")
		got, err := f.dialInbound(forged)
		if err == nil || got != "" {
			t.Errorf("central's ID signed by an east root got %q, %v", got, err)
		}
		t.Logf("refused: %v", err)
	})

	// A trust domain the control plane no longer sends is refused at once.
	if got, err := f.dialInbound(f.east.cred(t, "/ns/shop/sa/order")); err != nil || got != "barista: one latte\n" {
		t.Fatalf("east's order before east's removal: %q, %v", got, err)
	}
	setBundles(f.central.bundle())
	if got, err := f.dialInbound(f.east.cred(t, "/ns/shop/sa/order")); err == nil || got != "" {
		t.Errorf("east's order after east's bundle was withdrawn: %q, %v", got, err)
	}
	// The sidecar still serves its own trust domain.
	if got, err := f.dialInbound(f.central.cred(t, "/ns/shop/sa/cashier")); err != nil || got != "barista: one latte\n" {
		t.Errorf("central's cashier after the refusals: %q, %v", got, err)
	}
}
