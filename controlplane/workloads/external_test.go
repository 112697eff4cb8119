package workloads_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
)

// vmSidecar is a VM of central with its sidecar, reached through
// central's gateway, in a mesh whose hub imports trust domains from
// outside the federation.
type vmSidecar struct {
	tm      *fedtest.Mesh
	central *vmCluster
}

func startVMSidecar(t *testing.T, configureHub func(*hub.Config)) *vmSidecar {
	t.Helper()
	buildBinaries()
	tm := fedtest.NewMeshWith(t, testTimers, configureHub)
	central := startVMCluster(t, tm, "central", 2*time.Second, time.Minute)
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, app, "barista: ", nil)
	dir := t.TempDir()
	federate, agentBin := binaries(t)
	if out, err := central.configure(t, tm, federate, baristaGroup(app.Addr().(*net.TCPAddr).Port), dir, time.Minute); err != nil {
		t.Fatalf("vm configure: %v\n%s", err, out)
	}
	writeSidecar(t, dir, "inbound: {listen: 127.0.0.1:0}\n")
	startAgent(t, agentBin, dir, t.TempDir())
	fedtest.Eventually(t, 15*time.Second, "central sees the VM healthy", func() bool {
		ep := baristaEndpoint(central.cp.Member(), "central")
		return ep != nil && ep.GetHealth() == registrypb.Health_HEALTHY
	})
	return &vmSidecar{tm: tm, central: central}
}

// call dials the VM through central's gateway as cred and reports whether
// the sidecar let the call reach the application.
func (s *vmSidecar) call(cred *trust.Credential) error {
	baristaID := spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/barista")
	conf := tlsconfig.MTLSClientConfig(cred, x509bundle.NewSet(s.central.cp.Member().Authority().Bundle().X509Bundle()), tlsconfig.AuthorizeID(baristaID))
	conf.ServerName = xds.ClusterName(8083, "", "barista.shop.svc.cluster.local")
	c, err := tls.Dial("tcp", s.central.gwAddr, conf)
	if err != nil {
		return err
	}
	answer, err := say(c, "one flat white")
	if err == nil && answer != "barista: one flat white\n" {
		return fmt.Errorf("unexpected answer %q", answer)
	}
	return err
}

// held is the bundle central's control plane holds for td.
func (s *vmSidecar) held(td spiffeid.TrustDomain) *spiffebundle.Bundle {
	b, err := s.central.cp.Member().Bundles().GetBundleForTrustDomain(td)
	if err != nil {
		return spiffebundle.New(td)
	}
	return b
}

// holds reports whether central's control plane holds want as td's bundle.
func (s *vmSidecar) holds(want *spiffebundle.Bundle) bool {
	held := s.held(want.TrustDomain())
	hs, _ := held.SequenceNumber()
	ws, _ := want.SequenceNumber()
	return hs == ws && held.X509Bundle().Equal(want.X509Bundle())
}

// pushLimit bounds how long a changed imported bundle may take from the
// control plane to a sidecar: milliseconds on an idle machine, seconds on
// a loaded one; without the push it never arrives while the mesh is quiet.
const pushLimit = 5 * time.Second

// within waits until cond holds and returns how long that took, failing
// past limit.
func within(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	fedtest.Eventually(t, limit, what, cond)
	return time.Since(start)
}

// A partner's new root, and the revocation of its old one, reach the VM's
// sidecar within seconds (milliseconds when idle) of central's control
// plane holding the new bundle, with nothing else changing in the mesh: a caller with an SVID
// of the new root gets through the gateway and the sidecar at once, and a
// caller with an SVID of the revoked root is refused by the next
// handshake.
func TestIntegrationImportedRootsReachSidecarAtOnce(t *testing.T) {
	t.Parallel()
	p := fedtest.NewPartner(t, "partner.example")
	s := startVMSidecar(t, func(c *hub.Config) { c.External = []hub.ExternalTrustDomain{p.External()} })
	orderID := spiffeid.RequireFromPath(p.TD, "/ns/partner/sa/order")
	oldSVID := p.Issue(0, orderID)
	fedtest.EventuallyNil(t, 10*time.Second, "a partner caller through the gateway and the sidecar", func() error { return s.call(oldSVID) })

	// Add: a new root (SPIRE's prepare), then an SVID it signed (activate).
	newRoot := p.AddRoot()
	fedtest.Eventually(t, 10*time.Second, "central holds the partner bundle with the new root", func() bool { return s.holds(p.Bundle()) })
	newSVID := p.Issue(newRoot, orderID)
	d := within(t, pushLimit, "the sidecar accepts an SVID of the new root", func() bool { return s.call(newSVID) == nil })
	t.Logf("new root: accepted by the sidecar %s after central held it", d.Round(time.Millisecond))

	// Revoke the old root: its SVIDs are refused by the next handshakes.
	p.Revoke(0)
	fedtest.Eventually(t, 10*time.Second, "central holds the partner bundle without the old root", func() bool { return s.holds(p.Bundle()) })
	d = within(t, pushLimit, "the sidecar refuses an SVID of the revoked root", func() bool { return s.call(oldSVID) != nil })
	t.Logf("revoked root: refused by the sidecar %s after central held the bundle", d.Round(time.Millisecond))
	for range 5 {
		if err := s.call(oldSVID); err == nil {
			t.Fatal("an SVID of the revoked root got through the sidecar again")
		}
		if err := s.call(newSVID); err != nil {
			t.Fatalf("an SVID of the new root was refused after the revocation: %v", err)
		}
	}
}
