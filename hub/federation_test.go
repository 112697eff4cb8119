package hub_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Every test here runs its own mesh on loopback, so they run in parallel,
// with gossip's default timers: none waits for a cluster to turn stale.

// An independent client, go-spiffe's federation.FetchBundle, reads a
// member's bundle from the hub's https_spiffe endpoint, and the bundle
// verifies that member's SVIDs.
func TestIntegrationBundleEndpoint(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMeshWith(t, gossip.Timers{}, func(c *hub.Config) { c.BundleListen = "127.0.0.1:0" })
	east := tm.AddCluster("east")
	east.Update(t, fedtest.CoffeeService("east", "order", 1, 18080))
	eastTD := spiffeid.RequireTrustDomainFromString("east.shop")
	fedtest.Eventually(t, 10*time.Second, "hub holds east's bundle", func() bool {
		_, err := tm.Hub.Bundles().GetBundleForTrustDomain(eastTD)
		return err == nil
	})

	cas, err := trust.LoadCertificates(filepath.Join(tm.Dir, "hub", membership.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	meshTD := spiffeid.RequireTrustDomainFromString("shop")
	url := "https://" + tm.Hub.BundleAddr() + hub.BundlePath(eastTD)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := federation.FetchBundle(ctx, eastTD, url, federation.WithSPIFFEAuth(trust.Bundle(meshTD, cas...), membership.HubID(meshTD)))
	if err != nil {
		t.Fatalf("FetchBundle: %v", err)
	}
	if seq, _ := b.SequenceNumber(); seq != 1 {
		t.Errorf("fetched sequence %d, want 1", seq)
	}
	svid, err := east.Member.Authority().IssueCredential(spiffeid.RequireFromPath(eastTD, "/ns/shop/sa/order"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := svid.GetX509SVID()
	if _, _, err := x509svid.Verify(s.Certificates, b.X509Bundle()); err != nil {
		t.Errorf("east's SVID does not verify against the fetched bundle: %v", err)
	}

	// The endpoint refuses unknown trust domains and other methods, and a
	// client expecting another endpoint ID refuses the hub.
	if _, err := federation.FetchBundle(ctx, eastTD, url, federation.WithSPIFFEAuth(trust.Bundle(meshTD, cas...), membership.AdminID(meshTD))); err == nil {
		t.Error("FetchBundle accepted an endpoint with the wrong SPIFFE ID")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.TLSClientConfig(trust.Bundle(meshTD, cas...), tlsconfig.AuthorizeID(membership.HubID(meshTD)))}}
	defer client.CloseIdleConnections()
	for path, want := range map[string]int{"/nowhere.shop": http.StatusNotFound, "/": http.StatusNotFound} {
		resp, err := client.Get("https://" + tm.Hub.BundleAddr() + path)
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
	t.Parallel()
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
	tm := fedtest.NewMeshWith(t, gossip.Timers{}, func(c *hub.Config) {
		c.External = []hub.ExternalTrustDomain{{
			TrustDomain: partnerTD, URL: "https://" + lis.Addr().String() + "/", Profile: hub.ProfileHTTPSSPIFFE,
			EndpointID: endpointID, Bundle: initial,
		}}
	})
	east := tm.AddCluster("east")
	west := tm.AddCluster("west")
	seqAt := func(m *member.Member) uint64 {
		seq, _ := m.Bundles().Sequence(partnerTD)
		return seq
	}
	fedtest.Eventually(t, 10*time.Second, "partner's bundle at every member", func() bool {
		return seqAt(east.Member) == 1 && seqAt(west.Member) == 1
	})

	// The partner adds a root: the hub's next poll picks it up.
	if err := partner.AddRoot(); err != nil {
		t.Fatal(err)
	}
	if _, err := served.Update(partner.Bundle()); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 10*time.Second, "refreshed partner bundle at every member", func() bool {
		return seqAt(east.Member) == 2 && seqAt(west.Member) == 2
	})
	st, err := tm.AdminRegistry().Status(fedtest.DeadlineContext(t, 10*time.Second), &hubpb.StatusRequest{})
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
	t.Parallel()
	tm := fedtest.StartCoffeeShop(t, gossip.Timers{})
	centralTD := spiffeid.RequireTrustDomainFromString("central.shop")
	for _, name := range []string{"east", "west"} {
		if _, err := tm.Member(name).Member.Bundles().GetBundleForTrustDomain(centralTD); err != nil {
			t.Fatalf("%s lacks central's bundle before the removal: %v", name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := tm.AdminClient().RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: "central"}); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 10*time.Second, "central withdrawn everywhere", func() bool {
		for _, name := range []string{"east", "west"} {
			m := tm.Member(name).Member
			if m.Version("central") != nil {
				return false
			}
			if _, err := m.Bundles().GetBundleForTrustDomain(centralTD); err == nil {
				return false
			}
		}
		return tm.Hub.SliceVersion("central") == nil
	})

	// The old credential is refused by the hub, and its new records are
	// refused by the members, even when fetched from central directly.
	conn, err := membership.Dial(tm.HubAddr, filepath.Join(tm.Dir, "central", membership.CredentialFile), filepath.Join(tm.Dir, "central", membership.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = hubpb.NewRegistryClient(conn).Status(ctx, &hubpb.StatusRequest{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "removed") {
		t.Errorf("removed cluster's Status call: %v, want PermissionDenied naming the removal", err)
	}
	tm.Member("central").Update(t, fedtest.CoffeeService("central", "inventory", 3, 18082))
	// Nothing happens: for two seconds, no change of east's view brings
	// central's records.
	east := tm.Member("east").Member
	quiet := time.NewTimer(2 * time.Second)
	defer quiet.Stop()
	for watching := true; watching; {
		changed := east.Changed()
		if east.Version("central") != nil {
			t.Fatal("east accepted records of a removed cluster")
		}
		select {
		case <-quiet.C:
			watching = false
		case <-changed:
		}
	}

	// Joining again with a new token restores it everywhere.
	tm.StopMember("central")
	tm.Join("central")
	tm.StartMember("central").Update(t, fedtest.CoffeeService("central", "inventory", 1, 18082))
	fedtest.Eventually(t, 15*time.Second, "central back everywhere", func() bool {
		_, err := tm.Member("east").Member.Bundles().GetBundleForTrustDomain(centralTD)
		return tm.Converged("central") && err == nil
	})
}

// A member renews its cluster credential at half life, with no token, and
// keeps working past the first credential's expiry.
func TestIntegrationCredentialRenewal(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMeshWith(t, gossip.Timers{}, func(c *hub.Config) { c.CredentialTTL = 4 * time.Second })
	tm.Join("east")
	var cred *trust.Credential // the member renews it in place
	east := tm.StartMemberWith("east", func(c *member.Config) { cred = c.Credential })
	west := tm.AddCluster("west")
	first := cred.Leaf()
	fedtest.Eventually(t, 15*time.Second, "east renewed", func() bool {
		return cred.Leaf().SerialNumber.Cmp(first.SerialNumber) != 0
	})
	fedtest.Eventually(t, 5*time.Second, "the renewed credential saved to the data directory", func() bool {
		saved, err := trust.LoadCredential(filepath.Join(tm.Dir, "east", membership.CredentialFile))
		return err == nil && saved.Leaf().SerialNumber.Cmp(first.SerialNumber) != 0
	})
	waitUntilTime(t, first.NotAfter.Add(time.Second))
	east.Update(t, fedtest.CoffeeService("east", "order", 4, 18080))
	fedtest.Eventually(t, 10*time.Second, "east's change after its first credential expired", func() bool {
		return len(fedtest.EndpointsOf(west.Member, "east", "order")) == 4
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
	t.Parallel()
	tm := fedtest.StartCoffeeShop(t, gossip.Timers{})
	file := filepath.Join(tm.Dir, "hub", hub.StoreFile)
	tm.StopHub()
	backup, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	tm.StartHub()
	east := tm.Member("east")
	east.Update(t, fedtest.CoffeeService("east", "order", 6, 18080))
	want := east.Member.Version("east")
	fedtest.Eventually(t, 10*time.Second, "hub has east's change", func() bool {
		return registry.Compare(tm.Hub.SliceVersion("east"), want) == 0
	})
	tm.StopHub()
	if err := os.WriteFile(file, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	tm.StartHub()
	if registry.Compare(tm.Hub.SliceVersion("east"), want) >= 0 {
		t.Fatal("the restored file already has east's change; the test proves nothing")
	}
	fedtest.Eventually(t, 15*time.Second, "east republished to the restored hub", func() bool {
		return registry.Compare(tm.Hub.SliceVersion("east"), want) == 0
	})
}
