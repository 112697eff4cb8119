package controlplane_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// A gateway configured over ADS by a real control plane (mTLS with the
// gateway's SVID) routes a TLS client by Istio SNI to the exported
// service's backend, and refuses an SNI that is not exported.
func TestIntegrationGatewayFollowsControlPlane(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, testTimers)
	tm.Join("east")
	lis := fedtest.GatewayListener(t)
	source := fedtest.NewSource()
	east := tm.StartControlPlane("east", controlplane.Config{Gateway: lis.Addr().String(), Source: source})

	// A TLS backend for order, as a workload of east would be.
	backendID := spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString("east.shop"), "/ns/shop/sa/order")
	backendCred, err := east.Member().Authority().IssueCredential(backendID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	backend, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.TLSServerConfig(backendCred))
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{})
	t.Cleanup(func() { backend.Close(); <-accepted })
	go func() {
		defer close(accepted)
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
	source.Set(svc)
	gw := tm.StartGateway(east, lis, nil)
	orderSNI := xds.ClusterName(8080, "", svc.Hostname)
	fedtest.Eventually(t, 10*time.Second, "the gateway routing order", func() bool {
		_, err := gw.Routes.Route(orderSNI)
		return err == nil
	})

	// A client in another cluster, trusting east's bundle, dials by SNI.
	dial := func(sni string) (string, error) {
		c, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{
			ServerName: sni, MinVersion: tls.VersionTLS12,
			InsecureSkipVerify: true, // SPIFFE identity is checked below, not the host name
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				id, _, err := x509svid.ParseAndVerify(raw, east.Member().Bundles())
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
	got, err := dial(orderSNI)
	if err != nil || !strings.Contains(got, "order says hello") {
		t.Fatalf("through the gateway: %q, %v", got, err)
	}
	if _, err := dial(xds.ClusterName(8080, "", "secret.shop.svc.cluster.local")); err == nil {
		t.Fatal("the gateway relayed an SNI that is not exported")
	}
	if n := gw.Stats().Refused[eastwest.RefusedUnknownSNI]; n != 1 {
		t.Errorf("unknown SNI refusals: %d, want 1", n)
	}
	gw.Stop()
}
