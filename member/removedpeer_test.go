package member_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/trust"
)

// A removed cluster reads nothing more from its former peers: every
// control plane's Registry API (peer fetch and status, which serve when
// the hub is down) refuses its credential once the removal has reached
// it, saying so, and its workloads' SVIDs no longer pass the handshake.
func TestIntegrationRemovedClusterIsRefusedByPeers(t *testing.T) {
	t.Parallel()
	tm := startCoffeeShop(t, nil)
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	east := tm.Member("east").Member
	mesh := spiffeid.RequireTrustDomainFromString(east.Mesh())
	bundle := trust.Bundle(mesh, east.MeshCA()...)
	cred := tm.ClusterCredential(t, "central")
	a := tm.Member("central").Member.Authority()
	workload, err := a.IssueCredential(spiffeid.RequireFromPath(a.TrustDomain(), "/ns/shop/sa/inventory"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	registry := func(c *trust.Credential) hubpb.RegistryClient {
		return hubpb.NewRegistryClient(fedtest.DialWith(t, east.Addr(), credentials.NewTLS(trust.ClientTLS(c, bundle, tlsconfig.AuthorizeMemberOf(mesh)))))
	}
	calls := func(rc hubpb.RegistryClient) map[string]func() error {
		call := func(f func(context.Context) error) func() error {
			return func() error {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				return f(cctx)
			}
		}
		return map[string]func() error{
			"Fetch":  call(func(c context.Context) error { _, err := rc.Fetch(c, &hubpb.FetchRequest{}); return err }),
			"Status": call(func(c context.Context) error { _, err := rc.Status(c, &hubpb.StatusRequest{}); return err }),
		}
	}
	// Before the removal, central reads from east, and its workloads pass
	// the handshake (and are refused by the call, as not members).
	for name, f := range calls(registry(cred)) {
		if err := f(); err != nil {
			t.Fatalf("central's %s at east before its removal: %v", name, err)
		}
	}
	for name, f := range calls(registry(workload)) {
		fedtest.WantCode(t, f(), "central's workload "+name+" at east before the removal", codes.PermissionDenied)
	}

	if _, err := tm.AdminClient().RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: "central"}); err != nil {
		t.Fatal(err)
	}
	centralTD := a.TrustDomain()
	fedtest.Eventually(t, 10*time.Second, "east dropped central's bundle", func() bool {
		_, err := east.Bundles().GetBundleForTrustDomain(centralTD)
		return err != nil
	})

	// A fresh connection each time: the removal must not depend on an old
	// connection being closed.
	for name, f := range calls(registry(cred)) {
		var err error
		fedtest.Eventually(t, 10*time.Second, "east refuses central's "+name, func() bool {
			err = f()
			return status.Code(err) == codes.PermissionDenied
		})
		if !strings.Contains(status.Convert(err).Message(), "removed") {
			t.Errorf("east's refusal of central's %s, %q, does not say central was removed", name, status.Convert(err).Message())
		}
	}
	for name, f := range calls(registry(workload)) {
		fedtest.WantCode(t, f(), "central's workload "+name+" at east after the removal", codes.Unavailable)
	}
	// The handshake itself fails for central's workloads.
	conf := trust.ClientTLS(workload, bundle, tlsconfig.AuthorizeMemberOf(mesh))
	conf.NextProtos = []string{"h2"}
	c, err := tls.Dial("tcp", east.Addr(), conf)
	if err == nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil {
		t.Fatal("east completed a TLS session with a removed cluster's workload")
	}
	t.Logf("central's workload at east after the removal: %v", err)
}
