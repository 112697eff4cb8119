package controlplane_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// Workloads.Bundles, which 'federate-agent svid' polls, gives every
// federated trust domain's roots to a workload of the control plane's own
// trust domain, and to no one else.
func TestBundlesServeOnlyOwnWorkloads(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("east")
	tm.Join("west")
	east := tm.StartControlPlane("east", controlplane.Config{Source: fedtest.NewSource()})
	west := tm.StartControlPlane("west", controlplane.Config{Source: fedtest.NewSource()})
	m := east.Member()
	mesh := spiffeid.RequireTrustDomainFromString(m.Mesh())
	issue := func(cp *fedtest.ControlPlane, path string) *trust.Credential {
		a := cp.Member().Authority()
		c, err := a.IssueCredential(spiffeid.RequireFromPath(a.TrustDomain(), path), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ms, err := membership.LoadMembership(east.Dir)
	if err != nil {
		t.Fatal(err)
	}
	serverOK := tlsconfig.AuthorizeMemberOf(mesh)
	withCert := func(c *trust.Credential) *tls.Config {
		return trust.ClientTLS(c, trust.Bundle(mesh, m.MeshCA()...), serverOK)
	}
	bundles := func(conf *tls.Config) (*agentpb.BundlesResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := grpc.NewClient(m.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(conf)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return agentpb.NewWorkloadsClient(conn).Bundles(ctx, &agentpb.BundlesRequest{})
	}
	fedtest.Eventually(t, 10*time.Second, "east's bundles listing west's trust domain", func() bool {
		resp, err := bundles(withCert(issue(east, "/ns/shop/sa/client")))
		return err == nil && len(resp.GetBundles()) == 2 &&
			resp.GetBundles()[0].GetTrustDomain() == "east.shop" && resp.GetBundles()[1].GetTrustDomain() == "west.shop"
	})
	for _, tc := range []struct {
		name string
		conf *tls.Config
		want codes.Code
	}{
		{"no certificate", tlsconfig.TLSClientConfig(trust.Bundle(mesh, m.MeshCA()...), serverOK), codes.Unauthenticated},
		{"the cluster's credential", withCert(ms.Credential), codes.PermissionDenied},
		{"a workload of another trust domain", withCert(issue(west, "/ns/shop/sa/client")), codes.PermissionDenied},
		{"not a workload ID", withCert(issue(east, "/gateway")), codes.PermissionDenied},
	} {
		if _, err := bundles(tc.conf); status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
