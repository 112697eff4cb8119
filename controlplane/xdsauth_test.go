package controlplane_test

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// The control plane's xDS answers only its own gateway's identity for
// gateway nodes and workloads for client nodes; a caller without a
// certificate, from an unfederated trust domain, or claiming another's
// node is refused before any resource is sent.
func TestXDSRefusesWhoMayNotRead(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("east")
	cp := tm.StartControlPlane("east", controlplane.Config{Source: fedtest.NewSource(fedtest.CoffeeService("east", "order", 2, 8080))})
	m := cp.Member()
	mesh := spiffeid.RequireTrustDomainFromString(m.Mesh())
	serverOK := tlsconfig.AuthorizeMemberOf(mesh)
	issue := func(path string) *trust.Credential {
		c, err := m.Authority().IssueCredential(spiffeid.RequireFromPath(m.Authority().TrustDomain(), path), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ms, err := membership.LoadMembership(cp.Dir)
	if err != nil {
		t.Fatal(err)
	}
	foreignCA, err := trust.NewAuthority(spiffeid.RequireTrustDomainFromString("evil.example"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := foreignCA.IssueCredential(spiffeid.RequireFromPath(foreignCA.TrustDomain(), controlplane.GatewayPath), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	withCert := func(c *trust.Credential) *tls.Config {
		return trust.ClientTLS(c, trust.Bundle(mesh, m.MeshCA()...), serverOK)
	}
	noCert := tlsconfig.TLSClientConfig(trust.Bundle(mesh, m.MeshCA()...), serverOK)

	cases := []struct {
		name string
		tls  *tls.Config
		node string
		want codes.Code
	}{
		{"no certificate", noCert, "gw-1", codes.Unauthenticated},
		{"no certificate, client node", noCert, "sidecar~10.0.0.1~order.shop~shop.svc.cluster.local", codes.Unauthenticated},
		{"unfederated trust domain", withCert(foreign), "gw-1", codes.Unavailable},
		{"a workload claiming the gateway's node", withCert(issue("/ns/shop/sa/order")), "gw-1", codes.PermissionDenied},
		{"the cluster's own credential claiming the gateway's node", withCert(ms.Credential), "gw-1", codes.PermissionDenied},
		{"the cluster's own credential claiming a client node", withCert(ms.Credential), "sidecar~10.0.0.1~order.shop~shop.svc.cluster.local", codes.PermissionDenied},
		{"the gateway", withCert(issue(controlplane.GatewayPath)), "gw-1", codes.OK},
		{"a workload as a client", withCert(issue("/ns/shop/sa/order")), "sidecar~10.0.0.1~order.shop~shop.svc.cluster.local", codes.OK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := ads(t, m.Addr(), tc.tls, tc.node)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
			if tc.want != codes.OK && resp != nil {
				t.Fatalf("a refused caller received %d resources", len(resp.GetResources()))
			}
			if tc.want == codes.OK && len(resp.GetResources()) == 0 {
				t.Fatal("an authorized caller received no listener")
			}
		})
	}
}

// ads asks for the listeners as node and returns the first response.
func ads(t *testing.T, addr string, conf *tls.Config, node string) (*discoverypb.DiscoveryResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: resourcev3.ListenerType}); err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("no answer within 10s")
	}
	return resp, err
}
