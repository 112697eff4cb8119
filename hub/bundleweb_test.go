package hub_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// With the https_web profile the bundle endpoint presents the operator's
// web PKI certificate: a client that trusts only that PKI (as SPIRE's
// https_web profile trusts the system roots) fetches a member's bundle
// with no mesh bundle, an https_spiffe client is refused, and a renewed
// certificate is served without a restart.
func TestIntegrationBundleEndpointWebProfile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pki := fedtest.NewWebPKI(t, dir)
	certFile, keyFile := filepath.Join(dir, "bundle.pem"), filepath.Join(dir, "bundle-key.pem")
	first := pki.Issue(certFile, keyFile, "localhost", "127.0.0.1")
	tm := fedtest.NewMeshWith(t, gossip.Timers{}, func(c *hub.Config) {
		c.BundleListen, c.BundleProfile, c.BundleCertFile, c.BundleKeyFile = "127.0.0.1:0", hub.ProfileHTTPSWeb, certFile, keyFile
	})
	tm.AddCluster("east").Update(t, fedtest.CoffeeService("east", "order", 1, 18080))
	eastTD := spiffeid.RequireTrustDomainFromString("east.shop")
	url := "https://" + tm.Hub.BundleAddr() + hub.BundlePath(eastTD)
	ctx := fedtest.DeadlineContext(t, 20*time.Second)
	fedtest.Eventually(t, 10*time.Second, "hub holds east's bundle", func() bool {
		_, err := tm.Hub.Bundles().GetBundleForTrustDomain(eastTD)
		return err == nil
	})
	b, err := federation.FetchBundle(ctx, eastTD, url, federation.WithWebPKIRoots(pki.Pool()))
	if err != nil {
		t.Fatal(err)
	}
	if !b.X509Bundle().Equal(tm.Member("east").Member.Authority().Bundle().X509Bundle()) {
		t.Error("the bundle fetched over https_web is not east's")
	}
	meshTD := spiffeid.RequireTrustDomainFromString("shop")
	if _, err := federation.FetchBundle(ctx, eastTD, url, federation.WithSPIFFEAuth(tm.Hub.Bundles(), spiffeid.RequireFromPath(meshTD, "/hub"))); err == nil {
		t.Error("an https_spiffe client accepted the https_web endpoint")
	}
	served := func() string {
		conn, err := tls.Dial("tcp", tm.Hub.BundleAddr(), &tls.Config{RootCAs: pki.Pool(), ServerName: "localhost"})
		if err != nil {
			return err.Error()
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got := served(); got != first.SerialNumber.String() {
		t.Fatalf("served %s, want the first certificate %s", got, first.SerialNumber)
	}
	renewed := pki.Issue(certFile, keyFile, "localhost", "127.0.0.1")
	fedtest.Eventually(t, 5*time.Second, "the renewed certificate is served", func() bool { return served() == renewed.SerialNumber.String() })
}

// Bad bundle endpoint settings fail at New with what to do.
func TestBundleProfileSettingsAreChecked(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  hub.Config
		want string
	}{
		{hub.Config{BundleProfile: hub.ProfileHTTPSWeb}, "pass --bundle-cert and --bundle-key"},
		{hub.Config{BundleProfile: hub.ProfileHTTPSWeb, BundleCertFile: "c.pem"}, "pass --bundle-cert and --bundle-key"},
		{hub.Config{BundleCertFile: "c.pem", BundleKeyFile: "k.pem"}, "add --bundle-profile https_web"},
		{hub.Config{BundleProfile: "https"}, `profile "https": want https_spiffe or https_web`},
	} {
		tc.cfg.Mesh, tc.cfg.DataDir, tc.cfg.Listen = "shop", t.TempDir(), "127.0.0.1:0"
		if _, err := hub.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
	// A missing certificate file fails the start, not the first handshake.
	dir := t.TempDir()
	srv, err := hub.New(hub.Config{Logger: slog.New(slog.DiscardHandler), Mesh: "shop", DataDir: dir, Listen: "127.0.0.1:0", BundleListen: "127.0.0.1:0",
		BundleProfile: hub.ProfileHTTPSWeb, BundleCertFile: filepath.Join(dir, "none.pem"), BundleKeyFile: filepath.Join(dir, "none-key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Run(ctx); err == nil || !strings.Contains(err.Error(), "none.pem") {
		t.Errorf("Run with a missing bundle certificate = %v, want an error naming the file", err)
	}
}
