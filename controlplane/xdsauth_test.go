package controlplane_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerpb "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
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
// node (or another namespace's) is refused before any resource is sent,
// over state-of-the-world and delta streams alike.
func TestXDSRefusesWhoMayNotRead(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("east")
	private := fedtest.CoffeeService("east", "till", 1, 8080)
	private.ExportTo = []string{"."}
	cp := tm.StartControlPlane("east", controlplane.Config{Source: fedtest.NewSource(fedtest.CoffeeService("east", "order", 2, 8080), private)})
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
		{"a workload claiming another namespace's node", withCert(issue("/ns/billing/sa/pay")), "sidecar~10.0.0.1~order.shop~shop.svc.cluster.local", codes.PermissionDenied},
		{"an empty node ID", withCert(issue("/ns/shop/sa/order")), "", codes.PermissionDenied},
		{"a workload as a client", withCert(issue("/ns/shop/sa/order")), "sidecar~10.0.0.1~order.shop~shop.svc.cluster.local", codes.OK},
		{"a workload as a client whose node names no namespace", withCert(issue("/ns/shop/sa/order")), "sidecar~10.0.0.1~order", codes.OK},
	}
	for _, tc := range cases {
		for _, delta := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, delta %v", tc.name, delta), func(t *testing.T) {
				fetch := ads
				if delta {
					fetch = adsDelta
				}
				names, err := fetch(t, m.Addr(), tc.tls, tc.node)
				if got := status.Code(err); got != tc.want {
					t.Fatalf("got %v (%v), want %v", got, err, tc.want)
				}
				if tc.want != codes.OK && names != nil {
					t.Fatalf("a refused caller received %v", names)
				}
				if tc.want == codes.OK && len(names) == 0 {
					t.Fatal("an authorized caller received no listener")
				}
			})
		}
	}
	// A client's view is its SVID's namespace's: till (exportTo ".") is
	// seen in shop only, whatever the node ID says or leaves out.
	for _, tc := range []struct {
		path, node string
		till       bool
	}{
		{"/ns/shop/sa/order", "sidecar~10.0.0.1~order", true},
		{"/ns/billing/sa/pay", "sidecar~10.0.0.2~pay", false},
		{"/ns/billing/sa/pay", "sidecar~10.0.0.2~pay.billing~billing.svc.cluster.local", false},
	} {
		for _, fetch := range []func(*testing.T, string, *tls.Config, string) ([]string, error){ads, adsDelta} {
			names, err := fetch(t, m.Addr(), withCert(issue(tc.path)), tc.node)
			if err != nil {
				t.Fatal(err)
			}
			if got := slices.Contains(names, "till.shop.svc.cluster.local:8080"); got != tc.till || !slices.Contains(names, "order.shop.svc.cluster.local:8080") {
				t.Errorf("%s as %s: got %v, want till %v and order", tc.path, tc.node, names, tc.till)
			}
		}
	}
}

// ads asks for the listeners as node over a state-of-the-world stream and
// returns the names in the first response.
func ads(t *testing.T, addr string, conf *tls.Config, node string) ([]string, error) {
	return firstListeners(t, addr, conf, func(ctx context.Context, c discoverypb.AggregatedDiscoveryServiceClient) ([]string, error) {
		stream, err := c.StreamAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		// A stream the server already refused fails Send with io.EOF;
		// its status comes with Recv.
		if err := stream.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: resourcev3.ListenerType}); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		var names []string
		for _, a := range resp.GetResources() {
			var l listenerpb.Listener
			if err := a.UnmarshalTo(&l); err != nil {
				t.Fatal(err)
			}
			names = append(names, l.GetName())
		}
		return names, nil
	})
}

// adsDelta is ads over a delta stream.
func adsDelta(t *testing.T, addr string, conf *tls.Config, node string) ([]string, error) {
	return firstListeners(t, addr, conf, func(ctx context.Context, c discoverypb.AggregatedDiscoveryServiceClient) ([]string, error) {
		stream, err := c.DeltaAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		// A stream the server already refused fails Send with io.EOF;
		// its status comes with Recv.
		if err := stream.Send(&discoverypb.DeltaDiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: resourcev3.ListenerType}); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		var names []string
		for _, r := range resp.GetResources() {
			names = append(names, r.GetName())
		}
		return names, nil
	})
}

// firstListeners dials addr with conf and runs ask within 10 s; a caller
// that gets no answer at all fails the test.
func firstListeners(t *testing.T, addr string, conf *tls.Config, ask func(context.Context, discoverypb.AggregatedDiscoveryServiceClient) ([]string, error)) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	names, err := ask(ctx, discoverypb.NewAggregatedDiscoveryServiceClient(conn))
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("no answer within 10s")
	}
	return names, err
}
