package workloads_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/spiretest"
	"github.com/federate/federate/internal/testport"
	"github.com/federate/federate/membership"
)

// Federation with a real SPIRE server (v1.13.3), both ways, configured as
// docs/spire.md says.
//
// SPIRE -> federate: the hub imports SPIRE's bundle from SPIRE's own
// bundle endpoint (https_spiffe, bootstrapped with 'spire-server bundle
// show -format spiffe'); an SVID SPIRE minted is accepted by a VM's
// sidecar through its cluster's gateway; the hub follows SPIRE's
// 'localauthority x509 prepare', 'activate', 'taint' and 'revoke', and
// after the revocation the sidecar refuses the old SVID at once while the
// new authority's SVID still gets through.
//
// federate -> SPIRE: once given the mesh bundle ('spire-server bundle set
// -id spiffe://shop' with the hub's ca.pem), SPIRE imports central's
// bundle from the hub's https_spiffe bundle endpoint, and follows a
// 'federate trust rotate' of central.
func TestIntegrationSPIREFederationBothWays(t *testing.T) {
	t.Parallel()
	buildBinaries()
	centralTD := spiffeid.RequireTrustDomainFromString("central.shop")
	hubBundleAddr := testport.Addr(t)
	spire := spiretest.Start(t, spiretest.Config{TrustDomain: "spire.example", FederatesWith: []spiretest.Federation{{
		TrustDomain: centralTD.Name(), URL: "https://" + hubBundleAddr + "/" + centralTD.Name(), EndpointID: "spiffe://shop/hub",
	}}})
	bootstrap := readSPIFFEBundle(t, spire.TD, spire.BundleFile())
	s := startVMSidecar(t, func(c *hub.Config) {
		c.BundleListen = hubBundleAddr
		c.External = []hub.ExternalTrustDomain{{
			TrustDomain: spire.TD, URL: spire.BundleURL, Profile: hub.ProfileHTTPSSPIFFE,
			EndpointID: spire.EndpointID, Bundle: bootstrap, MaxRefresh: time.Second,
		}}
	})

	// SPIRE -> federate.
	spireBundle := func() *spiffebundle.Bundle { return readSPIFFEBundle(t, spire.TD, spire.BundleFile()) }
	fedtest.Eventually(t, 15*time.Second, "central holds SPIRE's bundle", func() bool { return s.holds(bootstrap) })
	orderID := spiffeid.RequireFromPath(spire.TD, "/ns/partner/sa/order")
	oldSVID := spire.Mint(orderID)
	fedtest.EventuallyNil(t, 10*time.Second, "a SPIRE SVID through central's gateway and the VM's sidecar", func() error { return s.call(oldSVID) })

	active, _, _ := spire.Authorities()
	spire.CLI("localauthority", "x509", "prepare")
	_, prepared, _ := spire.Authorities()
	withPrepared := spireBundle()
	if n := len(withPrepared.X509Authorities()); n != 2 {
		t.Fatalf("SPIRE's bundle has %d authorities after prepare, want 2", n)
	}
	fedtest.Eventually(t, 15*time.Second, "central holds SPIRE's bundle with the prepared authority", func() bool { return s.holds(withPrepared) })
	spire.CLI("localauthority", "x509", "activate", "-authorityID", prepared)
	newSVID := spire.Mint(orderID)
	fedtest.EventuallyNil(t, pushLimit, "an SVID of SPIRE's activated authority through the sidecar", func() error { return s.call(newSVID) })

	spire.CLI("localauthority", "x509", "taint", "-authorityID", active)
	spire.CLI("localauthority", "x509", "revoke", "-authorityID", active)
	revoked := spireBundle()
	if n := len(revoked.X509Authorities()); n != 1 {
		t.Fatalf("SPIRE's bundle has %d authorities after revoke, want 1", n)
	}
	fedtest.Eventually(t, 15*time.Second, "central holds SPIRE's bundle without the revoked authority", func() bool { return s.holds(revoked) })
	d := within(t, pushLimit, "the sidecar refuses the SVID of SPIRE's revoked authority", func() bool { return s.call(oldSVID) != nil })
	t.Logf("SPIRE's revoked authority: refused by the sidecar %s after central held the bundle", d.Round(time.Millisecond))
	if err := s.call(newSVID); err != nil {
		t.Errorf("the SVID of SPIRE's active authority was refused after the revocation: %v", err)
	}
	// SPIRE's endpoint still presents an SVID of the revoked authority for
	// a moment after the revocation: the hub's fetches fail until SPIRE
	// re-signs it, then succeed again.
	fedtest.EventuallyNil(t, 20*time.Second, "the hub fetches SPIRE's bundle without error after the revocation", func() error {
		st, err := s.tm.AdminRegistry().Status(fedtest.DeadlineContext(t, 5*time.Second), &hubpb.StatusRequest{})
		if err != nil {
			return err
		}
		if ext := st.GetExternal(); len(ext) != 1 || ext[0].GetError() != "" || ext[0].GetRoots() != 1 {
			return fmt.Errorf("hub status of SPIRE's trust domain: %v", ext)
		}
		return nil
	})
	st := s.central.cp.Member().StatusNow().GetExternal()
	if len(st) != 1 || st[0].GetTrustDomain() != "spire.example" || st[0].GetRoots() != 1 || st[0].GetError() != "" {
		t.Errorf("central's status of SPIRE's trust domain: %v", st)
	}

	// federate -> SPIRE: without the mesh bundle SPIRE cannot authenticate
	// the hub's endpoint; with it, it imports central's bundle.
	if err := spire.Refresh(centralTD); err == nil || !strings.Contains(err.Error(), "local copy of bundle not found") {
		t.Errorf("SPIRE's refresh of central before 'bundle set' = %v, want the documented 'local copy of bundle not found'", err)
	}
	spire.CLI("bundle", "set", "-id", "spiffe://shop", "-path", filepath.Join(s.tm.Dir, "hub", membership.CAFile), "-format", "pem")
	central := s.central.cp.Member()
	spireHoldsCentral := func() bool {
		if err := spire.Refresh(centralTD); err != nil {
			return false
		}
		held, err := spire.FederatedBundle(centralTD)
		if err != nil {
			return false
		}
		return held.X509Bundle().Equal(central.Authority().Bundle().X509Bundle())
	}
	fedtest.Eventually(t, 20*time.Second, "SPIRE holds central's bundle", spireHoldsCentral)

	federate, _ := binaries(t)
	rotate := exec.Command(federate, "trust", "rotate", "--cluster", "central", "--hub", s.tm.HubAddr,
		"--credential", filepath.Join(s.tm.Dir, "hub", hub.AdminCredFile))
	if out, err := rotate.CombinedOutput(); err != nil {
		t.Fatalf("federate trust rotate: %v\n%s", err, out)
	}
	if n := len(central.Authority().Bundle().X509Authorities()); n != 2 {
		t.Fatalf("central's bundle has %d roots after 'trust rotate', want 2", n)
	}
	fedtest.Eventually(t, 20*time.Second, "SPIRE holds central's rotated bundle", spireHoldsCentral)
}

func readSPIFFEBundle(t *testing.T, td spiffeid.TrustDomain, path string) *spiffebundle.Bundle {
	t.Helper()
	b, err := spiffebundle.Load(td, path)
	if err != nil {
		t.Fatalf("SPIRE's bundle %s: %v", path, err)
	}
	if _, ok := b.SequenceNumber(); !ok {
		t.Fatalf("SPIRE's bundle %s has no spiffe_sequence", path)
	}
	return b
}

// With the hub's bundle endpoint on the https_web profile (an operator's
// web PKI certificate), SPIRE imports a cluster's bundle with no mesh
// bundle given first: its https_web profile trusts the system roots,
// which here hold only the test's web root (SSL_CERT_FILE).
func TestIntegrationSPIREImportsOverHTTPSWeb(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pki := fedtest.NewWebPKI(t, dir)
	certFile, keyFile := filepath.Join(dir, "bundle.pem"), filepath.Join(dir, "bundle-key.pem")
	pki.Issue(certFile, keyFile, "localhost", "127.0.0.1")
	hubBundleAddr := testport.Addr(t)
	eastTD := spiffeid.RequireTrustDomainFromString("east.shop")
	spire := spiretest.Start(t, spiretest.Config{TrustDomain: "spire.example", WebRoots: pki.CAFile, FederatesWith: []spiretest.Federation{{
		TrustDomain: eastTD.Name(), URL: "https://" + hubBundleAddr + "/" + eastTD.Name(),
	}}})
	tm := fedtest.NewMeshWith(t, testTimers, func(c *hub.Config) {
		c.BundleListen, c.BundleProfile, c.BundleCertFile, c.BundleKeyFile = hubBundleAddr, hub.ProfileHTTPSWeb, certFile, keyFile
	})
	east := tm.AddCluster("east")
	east.Update(t, fedtest.CoffeeService("east", "order", 2, 18080))
	fedtest.Eventually(t, 20*time.Second, "SPIRE holds east's bundle over https_web", func() bool {
		if err := spire.Refresh(eastTD); err != nil {
			return false
		}
		held, err := spire.FederatedBundle(eastTD)
		return err == nil && held.X509Bundle().Equal(east.Member.Authority().Bundle().X509Bundle())
	})
}
