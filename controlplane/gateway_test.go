package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// A gateway configured over ADS by a real control plane (mTLS with the
// gateway's SVID) routes a TLS client by Istio SNI to the exported
// service's backend, and refuses an SNI that is not exported.
func TestIntegrationGatewayFollowsControlPlane(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tm := newTestMesh(t, testTimers)
	tm.join("east")
	config := xds.NewServer(ctx, tm.log)
	east := tm.startMemberWith("east", func(c *MemberConfig) { c.RegisterServices = config.Register })

	// A TLS backend for order, as a workload of east would be.
	backendID := spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("east.shop"), "/ns/shop/sa/order")
	backendCred, err := east.member.Authority().IssueCredential(backendID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	backend, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.TLSServerConfig(backendCred))
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, "order says hello\n")
			}()
		}
	}()
	host, portStr, _ := net.SplitHostPort(backend.Addr().String())
	port, _ := strconv.Atoi(portStr)
	svc := &registry.Service{
		Hostname: "order.shop.svc.cluster.local", Namespace: "shop", Name: "order",
		Ports: []*registry.Port{{Name: "http", Number: 8080}},
		Endpoints: []*registry.Endpoint{{
			Address: host, Ports: map[string]uint32{"http": uint32(port)}, Network: "net-east", Health: registrypb.Health_HEALTHY,
		}},
	}
	east.update(t, svc)
	snap, err := xds.Build(xds.Input{Version: "1", Network: "net-east", Services: east.member.Services("east")})
	if err != nil {
		t.Fatal(err)
	}
	if err := config.Update(ctx, snap); err != nil {
		t.Fatal(err)
	}

	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	gw, done := tm.startGateway(ctx, east, lis)

	// A client in another cluster, trusting east's bundle, dials by SNI.
	dial := func(sni string) (string, error) {
		c, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{
			ServerName: sni, MinVersion: tls.VersionTLS12,
			InsecureSkipVerify: true, // SPIFFE identity is checked below, not the host name
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				id, _, err := x509svid.ParseAndVerify(raw, east.member.Bundles())
				if err == nil && id != backendID {
					return io.ErrUnexpectedEOF
				}
				return err
			},
		})
		if err != nil {
			return "", err
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		return string(b), err
	}
	got, err := dial(xds.ClusterName(8080, "", svc.Hostname))
	if err != nil || !strings.Contains(got, "order says hello") {
		t.Fatalf("through the gateway: %q, %v", got, err)
	}
	if _, err := dial(xds.ClusterName(8080, "", "secret.shop.svc.cluster.local")); err == nil {
		t.Fatal("the gateway relayed an SNI that is not exported")
	}
	if n := gw.Stats().Refused[eastwest.RefusedUnknownSNI]; n != 1 {
		t.Errorf("unknown SNI refusals: %d, want 1", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// startGateway runs an east-west gateway on lis for member m, configured
// over ADS by m as cmd/eastwest-gateway wires it. done reports Serve's
// result once ctx ends.
func (tm *testMesh) startGateway(ctx context.Context, m *testMember, lis *net.TCPListener) (*eastwest.Gateway, <-chan error) {
	t := tm.t
	t.Helper()
	td := m.member.Authority().TrustDomain()
	gwCred, err := m.member.Authority().IssueCredential(spiffeid.RequireFromPath(td, "/ns/istio-system/sa/eastwest-gateway"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cas, _ := trust.LoadCertificates(filepath.Join(m.dir, CAFile))
	meshTD := spiffeid.RequireTrustDomainFromString("shop")
	conn, err := grpc.NewClient(m.member.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(
		trust.ClientTLS(gwCred, trust.Bundle(meshTD, cas...), tlsconfig.AuthorizeID(ClusterID(meshTD, m.name))))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	routes := &xds.Routes{}
	go xds.NewClient(xds.ClientConfig{Conn: conn, NodeID: m.name + "-gw", OnUpdate: routes.Set, Logger: tm.log}).Run(ctx)
	gw, err := eastwest.New(eastwest.Config{Router: routes, Logger: tm.log.With("node", m.name+"-gw")})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, lis) }()
	eventually(t, 10*time.Second, "the gateway's routing table", routes.Ready)
	return gw, done
}
