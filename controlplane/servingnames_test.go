package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// A proxyless gRPC client verifies the control plane by the name it
// dials, with the mesh CA (grpc-go's "tls" channel credentials): the
// control plane's certificate carries its internal name from the join on,
// and the serving names it is configured with after a renewal it starts
// at once; a name the hub does not give is refused at start.
func TestControlPlaneCertificateCarriesServingNames(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("west")
	if got := trust.CertificateNames(tm.ClusterCredential(t, "west").Leaf()); !slices.Contains(got, "controlplane.west.federate.internal") {
		t.Fatalf("the joined credential's names %v lack controlplane.west.federate.internal", got)
	}
	cp := tm.StartControlPlane("west", controlplane.Config{
		Source: fedtest.NewSource(fedtest.CoffeeService("west", "order", 1, 8080)), ServingNames: []string{"cp.west.example", "127.0.0.1"},
	})
	_, port, _ := net.SplitHostPort(cp.Member().Addr())
	roots := x509.NewCertPool()
	for _, c := range cp.Member().MeshCA() {
		roots.AddCert(c)
	}
	dialAs := func(name string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d := tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS12}}
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", port))
		if err == nil {
			c.Close()
		}
		return err
	}
	for _, name := range []string{"cp.west.example", "127.0.0.1", "controlplane.west.federate.internal"} {
		fedtest.Eventually(t, 10*time.Second, "a TLS client verifying the control plane as "+name, func() bool { return dialAs(name) == nil })
	}
	if err := dialAs("cp.east.example"); err == nil {
		t.Fatal("the control plane's certificate verified for a name it was not given")
	}
	saved, err := trust.LoadCredential(filepath.Join(cp.Dir, membership.CredentialFile))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := trust.CertificateNames(saved.Leaf()), []string{"west.shop", "controlplane.west.federate.internal", "cp.west.example", "127.0.0.1"}; !slices.Equal(got, want) {
		t.Errorf("saved credential names %v, want %v (the trust domain first)", got, want)
	}

	for _, bad := range []string{"controlplane.east.federate.internal", "*.west.example", "West.Example"} {
		if _, err := controlplane.New(controlplane.Config{Cluster: "west", Network: "n", DataDir: t.TempDir(), ConfigDir: t.TempDir(), ServingNames: []string{bad}}); err == nil {
			t.Errorf("serving name %q was accepted", bad)
		}
	}
}
