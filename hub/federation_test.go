package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// An independent client, go-spiffe's federation.FetchBundle, reads a
// member's bundle from the hub's https_spiffe endpoint, and the bundle
// verifies that member's SVIDs.
func TestIntegrationBundleEndpoint(t *testing.T) {
	tm := newTestMeshWith(t, testTimers, func(c *Config) { c.BundleListen = "127.0.0.1:0" })
	east := tm.addCluster("east")
	east.update(t, coffeeService("east", "order", 1, 18080))
	eastTD := spiffeid.RequireTrustDomainFromString("east.shop")
	eventually(t, 10*time.Second, "hub holds east's bundle", func() bool {
		_, err := tm.hub.Bundles().GetBundleForTrustDomain(eastTD)
		return err == nil
	})

	cas, err := trust.LoadCertificates(filepath.Join(tm.dir, "hub", CAFile))
	if err != nil {
		t.Fatal(err)
	}
	meshTD := spiffeid.RequireTrustDomainFromString("shop")
	url := "https://" + tm.hub.BundleAddr() + BundlePath(eastTD)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := federation.FetchBundle(ctx, eastTD, url, federation.WithSPIFFEAuth(trust.Bundle(meshTD, cas...), HubID(meshTD)))
	if err != nil {
		t.Fatalf("FetchBundle: %v", err)
	}
	if seq, _ := b.SequenceNumber(); seq != 1 {
		t.Errorf("fetched sequence %d, want 1", seq)
	}
	svid, err := east.member.Authority().IssueCredential(spiffeid.RequireFromPath(eastTD, "/ns/shop/sa/order"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := svid.GetX509SVID()
	if _, _, err := x509svid.Verify(s.Certificates, b.X509Bundle()); err != nil {
		t.Errorf("east's SVID does not verify against the fetched bundle: %v", err)
	}

	// The endpoint refuses unknown trust domains and other methods, and a
	// client expecting another endpoint ID refuses the hub.
	if _, err := federation.FetchBundle(ctx, eastTD, url, federation.WithSPIFFEAuth(trust.Bundle(meshTD, cas...), AdminID(meshTD))); err == nil {
		t.Error("FetchBundle accepted an endpoint with the wrong SPIFFE ID")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.TLSClientConfig(trust.Bundle(meshTD, cas...), tlsconfig.AuthorizeID(HubID(meshTD)))}}
	defer client.CloseIdleConnections()
	for path, want := range map[string]int{"/nowhere.shop": http.StatusNotFound, "/": http.StatusNotFound} {
		resp, err := client.Get("https://" + tm.hub.BundleAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	resp, err := client.Post(url, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
}

// An external trust domain's bundle endpoint, started here, is imported by
// the hub, relayed to every member, and refreshed when it changes.
func TestIntegrationExternalTrustDomain(t *testing.T) {
	partnerTD := spiffeid.RequireTrustDomainFromString("partner.example")
	partner, err := trust.NewAuthority(partnerTD, nil)
	if err != nil {
		t.Fatal(err)
	}
	partner.SetRefreshHint(time.Second)
	endpointID := spiffeid.RequireFromPath(partnerTD, "/bundle-endpoint")
	svid, err := partner.IssueCredential(endpointID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	served := trust.NewBundleSet(partner.Bundle())
	handler, err := federation.NewHandler(partnerTD, served)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.TLSServerConfig(svid))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })

	initial := partner.Bundle()
	tm := newTestMeshWith(t, testTimers, func(c *Config) {
		c.External = []ExternalTrustDomain{{
			TrustDomain: partnerTD, URL: "https://" + lis.Addr().String() + "/", Profile: ProfileHTTPSSPIFFE,
			EndpointID: endpointID, Bundle: initial,
		}}
	})
	east := tm.addCluster("east")
	west := tm.addCluster("west")
	seqAt := func(m *Member) uint64 {
		seq, _ := m.Bundles().Sequence(partnerTD)
		return seq
	}
	eventually(t, 10*time.Second, "partner's bundle at every member", func() bool {
		return seqAt(east.member) == 1 && seqAt(west.member) == 1
	})

	// The partner adds a root: the hub's next poll picks it up.
	if err := partner.AddRoot(); err != nil {
		t.Fatal(err)
	}
	if _, err := served.Update(partner.Bundle()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "refreshed partner bundle at every member", func() bool {
		return seqAt(east.member) == 2 && seqAt(west.member) == 2
	})
	st, err := tm.adminRegistry().Status(context.Background(), &hubpb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetExternal()) != 1 || st.GetExternal()[0].GetBundleSequence() != 2 || st.GetExternal()[0].GetError() != "" {
		t.Errorf("hub status of external trust domains: %v", st.GetExternal())
	}
}

// Removing a cluster withdraws its slice and bundle everywhere and makes its
// credential useless; a new token brings it back.
func TestIntegrationRemoveCluster(t *testing.T) {
	tm := startCoffeeShop(t)
	centralTD := spiffeid.RequireTrustDomainFromString("central.shop")
	for _, name := range []string{"east", "west"} {
		if _, err := tm.members[name].member.Bundles().GetBundleForTrustDomain(centralTD); err != nil {
			t.Fatalf("%s lacks central's bundle before the removal: %v", name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := tm.adminClient().RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: "central"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "central withdrawn everywhere", func() bool {
		for _, name := range []string{"east", "west"} {
			m := tm.members[name].member
			if m.Version("central") != nil {
				return false
			}
			if _, err := m.Bundles().GetBundleForTrustDomain(centralTD); err == nil {
				return false
			}
		}
		return tm.hub.set.Version("central") == nil
	})

	// The old credential is refused by the hub, and its new records are
	// refused by the members, even when fetched from central directly.
	conn, err := Dial(tm.hubAddr, filepath.Join(tm.dir, "central", CredentialFile), filepath.Join(tm.dir, "central", CAFile))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = hubpb.NewRegistryClient(conn).Status(ctx, &hubpb.StatusRequest{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "removed") {
		t.Errorf("removed cluster's Status call: %v, want PermissionDenied naming the removal", err)
	}
	tm.members["central"].update(t, coffeeService("central", "inventory", 3, 18082))
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if tm.members["east"].member.Version("central") != nil {
			t.Fatal("east accepted records of a removed cluster")
		}
		time.Sleep(50 * time.Millisecond) // observing that nothing happens
	}

	// Joining again with a new token restores it everywhere.
	tm.stopMember("central")
	tm.join("central")
	tm.startMember("central").update(t, coffeeService("central", "inventory", 1, 18082))
	eventually(t, 15*time.Second, "central back everywhere", func() bool {
		_, err := tm.members["east"].member.Bundles().GetBundleForTrustDomain(centralTD)
		return tm.converged("central") && err == nil
	})
}

// A member renews its cluster credential at half life, with no token, and
// keeps working past the first credential's expiry.
func TestIntegrationCredentialRenewal(t *testing.T) {
	tm := newTestMeshWith(t, testTimers, func(c *Config) { c.CredentialTTL = 4 * time.Second })
	east := tm.addCluster("east")
	west := tm.addCluster("west")
	first := east.member.cfg.Credential.Leaf()
	eventually(t, 15*time.Second, "east renewed", func() bool {
		return east.member.cfg.Credential.Leaf().SerialNumber.Cmp(first.SerialNumber) != 0
	})
	eventually(t, 5*time.Second, "the renewed credential saved to the data directory", func() bool {
		saved, err := trust.LoadCredential(filepath.Join(tm.dir, "east", CredentialFile))
		return err == nil && saved.Leaf().SerialNumber.Cmp(first.SerialNumber) != 0
	})
	waitUntilTime(t, first.NotAfter.Add(time.Second))
	east.update(t, coffeeService("east", "order", 4, 18080))
	eventually(t, 10*time.Second, "east's change after its first credential expired", func() bool {
		return len(endpointsOf(west.member, "east", "order")) == 4
	})
}

// waitUntilTime blocks until the wall clock passes at.
func waitUntilTime(t *testing.T, at time.Time) {
	t.Helper()
	timer := time.NewTimer(time.Until(at))
	defer timer.Stop()
	<-timer.C
}

// A hub restored from an older copy of its file gets back what members had
// published since: each member republishes what the hub lacks.
func TestIntegrationHubRestoredFromOlderFile(t *testing.T) {
	tm := startCoffeeShop(t)
	file := filepath.Join(tm.dir, "hub", StoreFile)
	tm.stopHub()
	backup, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	tm.startHub()
	east := tm.members["east"]
	east.update(t, coffeeService("east", "order", 6, 18080))
	want := east.member.Version("east")
	eventually(t, 10*time.Second, "hub has east's change", func() bool {
		return registry.Compare(tm.hub.set.Version("east"), want) == 0
	})
	tm.stopHub()
	if err := os.WriteFile(file, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	tm.startHub()
	if registry.Compare(tm.hub.set.Version("east"), want) >= 0 {
		t.Fatal("the restored file already has east's change; the test proves nothing")
	}
	eventually(t, 15*time.Second, "east republished to the restored hub", func() bool {
		return registry.Compare(tm.hub.set.Version("east"), want) == 0
	})
}

// A gateway's SVID renews itself at half life over the CSR API, presenting
// the SVID it holds: no token and no cluster credential after the first.
func TestIntegrationWorkloadRenewsWithItsOwnSVID(t *testing.T) {
	tm := newTestMesh(t, testTimers)
	east := tm.addCluster("east")
	east.update(t)
	meshTD := spiffeid.RequireTrustDomainFromString("shop")
	eastTD := spiffeid.RequireTrustDomainFromString("east.shop")
	id := spiffeid.RequireFromPath(eastTD, "/ns/istio-system/sa/eastwest-gateway")
	cas, err := trust.LoadCertificates(filepath.Join(tm.dir, "east", CAFile))
	if err != nil {
		t.Fatal(err)
	}
	cred, err := east.member.Authority().IssueCredential(id, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first := cred.Leaf()
	// The connection presents the workload's current SVID on every handshake.
	tlsConf := trust.ClientTLS(cred, trust.UnionBundles{trust.Bundle(meshTD, cas...), east.member.Bundles()}, tlsconfig.AuthorizeID(ClusterID(meshTD, "east")))
	conn, err := grpc.NewClient(east.member.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	renewed := make(chan struct{}, 8)
	r := &trust.Renewer{
		Credential: cred,
		Sign: func(ctx context.Context, csr []byte) ([]*x509.Certificate, error) {
			resp, err := hubpb.NewControlPlaneClient(conn).SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: id.String(), TtlSeconds: 2})
			if err != nil {
				return nil, err
			}
			return trust.ParseCertificates(resp.GetCertificates())
		},
		OnRenew: func(*trust.Credential) { renewed <- struct{}{} },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	// Two renewals: the second is authorized by the first renewed SVID.
	for range 2 {
		select {
		case <-renewed:
		case <-ctx.Done():
			t.Fatal("no renewal within 20s")
		}
	}
	if cred.Leaf().SerialNumber.Cmp(first.SerialNumber) == 0 || !time.Now().Before(cred.Expiry()) {
		t.Fatal("the workload credential was not renewed")
	}
	waitUntilTime(t, first.NotAfter.Add(time.Second))
	if !time.Now().Before(cred.Expiry()) {
		t.Fatal("the workload holds no valid SVID after the first one expired")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
