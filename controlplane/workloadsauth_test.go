package controlplane_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// The Workloads API and RotateRoot, on the control plane's one port, act
// only for the callers they name: a VM agent renews and registers only as
// its own identity and in a WorkloadGroup whose service account it holds;
// only the admin and the cluster's own credential onboard VMs or rotate
// the root; a token works only at the control plane that minted it. A
// caller without a certificate, from an unfederated trust domain, another
// cluster's credential, or a federated workload whose path matches but
// whose trust domain is another cluster's, is refused with a clear status,
// and nothing is registered, issued or rotated.
func TestWorkloadsAPIRefusesWhoMayNot(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("east")
	tm.Join("west")
	east := tm.StartControlPlane("east", controlplane.Config{Source: fedtest.NewSource()})
	west := tm.StartControlPlane("west", controlplane.Config{Source: fedtest.NewSource()})
	m := east.Member()
	mesh := spiffeid.RequireTrustDomainFromString(m.Mesh())
	serverOK := tlsconfig.AuthorizeMemberOf(mesh)
	issue := func(cp *fedtest.ControlPlane, path string) *trust.Credential {
		a := cp.Member().Authority()
		c, err := a.IssueCredential(spiffeid.RequireFromPath(a.TrustDomain(), path), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	loadCredential := func(cp *fedtest.ControlPlane) *trust.Credential {
		ms, err := membership.LoadMembership(cp.Dir)
		if err != nil {
			t.Fatal(err)
		}
		return ms.Credential
	}
	foreignCA, err := trust.NewAuthority(spiffeid.RequireTrustDomainFromString("evil.example"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := foreignCA.IssueCredential(spiffeid.RequireFromPath(foreignCA.TrustDomain(), "/ns/shop/sa/barista"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(addr string, cred *trust.Credential) (agentpb.WorkloadsClient, hubpb.ControlPlaneClient) {
		conf := tlsconfig.TLSClientConfig(trust.Bundle(mesh, m.MeshCA()...), serverOK)
		if cred != nil {
			conf = trust.ClientTLS(cred, trust.Bundle(mesh, m.MeshCA()...), serverOK)
		}
		conn := fedtest.DialWith(t, addr, credentials.NewTLS(conf))
		return agentpb.NewWorkloadsClient(conn), hubpb.NewControlPlaneClient(conn)
	}
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	call := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 10*time.Second) }

	// Who calls. Every refused identity below is one the TLS layer lets
	// through (or, for the unfederated one, the handshake refuses).
	eastCluster, westCluster := loadCredential(east), loadCredential(west)
	// sameTD callers hold an SVID of east's own trust domain: they may
	// renew it, as any workload of east may, and nothing more.
	callers := []struct {
		name   string
		cred   *trust.Credential
		sameTD bool
	}{
		{"no certificate", nil, false},
		{"an unfederated trust domain", foreign, false},
		{"west's cluster credential", westCluster, false},
		{"west's barista, a federated workload", issue(west, "/ns/shop/sa/barista"), false},
		{"east's order, another service account", issue(east, "/ns/shop/sa/order"), true},
		{"east's billing/barista, another namespace", issue(east, "/ns/billing/sa/barista"), true},
		{"east's gateway", issue(east, controlplane.GatewayPath), true},
	}
	barista := issue(east, "/ns/shop/sa/barista")

	// The group barista agents register in; its token, and one of west's.
	admin, _ := dial(m.Addr(), eastCluster)
	createBootstrap := func(c agentpb.WorkloadsClient) (*agentpb.CreateBootstrapResponse, error) {
		cctx, cancel := call()
		defer cancel()
		return c.CreateBootstrap(cctx, &agentpb.CreateBootstrapRequest{
			Namespace: "shop", Name: "barista", SpecJson: []byte(`{"template": {"serviceAccount": "barista"}}`), TtlSeconds: 600,
		})
	}
	eastToken, err := createBootstrap(admin)
	if err != nil {
		t.Fatalf("east's own credential creating a bootstrap: %v", err)
	}
	westAdmin, _ := dial(west.Member().Addr(), westCluster)
	westToken, err := createBootstrap(westAdmin)
	if err != nil {
		t.Fatalf("west's own credential creating a bootstrap at west: %v", err)
	}

	csr := func(sans ...string) []byte {
		t.Helper()
		key, err := trust.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.CertificateRequest{}
		for _, s := range sans {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, u)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	renew := func(c agentpb.WorkloadsClient, req []byte) (*agentpb.RenewResponse, error) {
		cctx, cancel := call()
		defer cancel()
		return c.Renew(cctx, &agentpb.RenewRequest{Csr: req})
	}
	// connect registers as barista-<address> and returns the first
	// configuration or the refusal.
	connect := func(c agentpb.WorkloadsClient, address string) error {
		cctx, cancel := call()
		defer cancel()
		stream, err := c.Connect(cctx)
		if err != nil {
			return err
		}
		reg := &agentpb.AgentMessage{Body: &agentpb.AgentMessage_Register{Register: &agentpb.Register{Group: "barista", Address: address, InboundPort: 15006}}}
		// A stream the server already refused fails Send with io.EOF;
		// its status comes with Recv.
		if err := stream.Send(reg); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	rotate := func(c hubpb.ControlPlaneClient) error {
		cctx, cancel := call()
		defer cancel()
		stream, err := c.RotateRoot(cctx, &hubpb.RotateRootRequest{})
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}

	for _, c := range callers {
		t.Run(c.name, func(t *testing.T) {
			cred := c.cred
			wl, cpc := dial(m.Addr(), cred)
			code := func(want codes.Code) []codes.Code {
				switch cred {
				case foreign: // an unfederated caller never gets past TLS
					return []codes.Code{codes.Unavailable}
				case nil:
					return []codes.Code{codes.Unauthenticated}
				}
				return []codes.Code{want}
			}

			// CreateBootstrap and RotateRoot say PermissionDenied to
			// callers without a certificate too.
			adminOnly := code(codes.PermissionDenied)
			if cred == nil {
				adminOnly = []codes.Code{codes.PermissionDenied}
			}
			_, err := createBootstrap(wl)
			fedtest.WantCode(t, err, "CreateBootstrap", adminOnly...)
			fedtest.WantCode(t, rotate(cpc), "RotateRoot", adminOnly...)

			resp, err := renew(wl, csr(barista.ID().String()))
			if c.sameTD {
				if err != nil {
					t.Fatalf("Renew of its own SVID: %v", err)
				}
				certs, err := trust.ParseCertificates(resp.GetCertificates())
				if err != nil {
					t.Fatal(err)
				}
				if id, err := x509svid.IDFromCert(certs[0]); err != nil || id != cred.ID() {
					t.Fatalf("Renew asking for barista's ID issued %v (%v), want the caller's own %s", id, err, cred.ID())
				}
			} else {
				fedtest.WantCode(t, err, "Renew", code(codes.PermissionDenied)...)
			}

			// Another namespace's caller cannot even see shop's group.
			want := codes.PermissionDenied
			if c.sameTD && trust.NamespaceOf(cred.ID()) != "shop" {
				want = codes.FailedPrecondition
			}
			st := fedtest.WantCode(t, connect(wl, "10.0.0.7"), "Connect to group shop/barista", code(want)...)
			if cred != nil && cred != foreign && want == codes.PermissionDenied && !strings.Contains(st.Message(), cred.ID().String()) {
				t.Errorf("Connect refusal %q does not name the caller %s", st.Message(), cred.ID())
			}
		})
	}

	// A token works only where it was minted, and only as sent.
	anon, _ := dial(m.Addr(), nil)
	for _, tc := range []struct {
		name, token, msg string
	}{
		{"west's token at east", westToken.GetToken(), "not issued by this control plane"},
		{"east's token with west's signature", eastToken.GetToken()[:strings.LastIndex(eastToken.GetToken(), ".")] + westToken.GetToken()[strings.LastIndex(westToken.GetToken(), "."):], "not issued by this control plane"},
		{"garbage", "not a token", "malformed"},
		{"a long token", strings.Repeat("x", 64<<10), "malformed"},
	} {
		cctx, cancel := call()
		_, err := anon.Bootstrap(cctx, &agentpb.BootstrapRequest{Token: tc.token, Csr: csr()})
		cancel()
		st := fedtest.WantCode(t, err, "Bootstrap with "+tc.name, codes.Unauthenticated)
		if !strings.Contains(st.Message(), tc.msg) {
			t.Errorf("Bootstrap with %s: refusal %q does not say %q", tc.name, st.Message(), tc.msg)
		}
	}

	if n := len(east.Workloads().Entries()); n != 0 {
		t.Fatalf("refused callers registered %d entries: %+v", n, east.Workloads().Entries())
	}
	if st := m.Authority().Status(); st.Phase != trust.PhaseStable || st.Sequence != 1 {
		t.Fatalf("refused callers moved east's root: phase %s, sequence %d", st.Phase, st.Sequence)
	}

	// Barista itself: Renew issues its own ID, whatever the request asks
	// for, and Connect registers it.
	wl, _ := dial(m.Addr(), barista)
	resp, err := renew(wl, csr("spiffe://east.shop/ns/shop/sa/order", "spiffe://"+mesh.Name()+"/admin"))
	if err != nil {
		t.Fatalf("barista renewing: %v", err)
	}
	certs, err := trust.ParseCertificates(resp.GetCertificates())
	if err != nil {
		t.Fatal(err)
	}
	if id, err := x509svid.IDFromCert(certs[0]); err != nil || id != barista.ID() {
		t.Fatalf("barista's renewal asking for other IDs issued %v (%v), want %s", id, err, barista.ID())
	}
	if len(certs[0].URIs) != 1 {
		t.Fatalf("barista's renewal carries URIs %v, want only its own", certs[0].URIs)
	}
	if err := connect(wl, "10.0.0.7"); err != nil {
		t.Fatalf("barista connecting: %v", err)
	}
}
