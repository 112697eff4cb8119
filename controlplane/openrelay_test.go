package controlplane_test

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/internal/fedtest"
)

// A cluster's gateway, programmed by its real control plane, routes only
// what belongs behind it: its own control plane's and gossip's internal
// names and its exported services. Another cluster's internal names and
// another cluster's services (which this cluster imports) are refused, so
// a caller on any network cannot use the gateway to reach further.
func TestIntegrationGatewayIsNoOpenRelay(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, testTimers)
	tm.Join("east")
	tm.Join("west")
	lis := fedtest.GatewayListener(t)
	east := tm.StartControlPlane("east", controlplane.Config{Gateway: lis.Addr().String(),
		Source: fedtest.NewSource(fedtest.CoffeeService("east", "order", 1, 8080))})
	tm.StartControlPlane("west", controlplane.Config{Source: fedtest.NewSource(fedtest.CoffeeService("west", "payment", 1, 8081))})
	gw := tm.StartGateway(east, lis, nil)
	paymentSNI := xds.ClusterName(8081, "", "payment.shop.svc.cluster.local")
	fedtest.Eventually(t, 15*time.Second, "east imports west's payment and routes its own order", func() bool {
		_, err := gw.Routes.Route(xds.ClusterName(8080, "", "order.shop.svc.cluster.local"))
		return err == nil && len(fedtest.EndpointsOf(east.Member(), "west", "payment")) == 1
	})

	for _, name := range []string{sni.Internal(sni.ControlPlane, "east"), sni.Internal(sni.Gossip, "east")} {
		if _, err := gw.Routes.Route(name); err != nil {
			t.Errorf("east's gateway does not route its own %s: %v", name, err)
		}
	}
	refused := []string{
		sni.Internal(sni.ControlPlane, "west"),
		sni.Internal(sni.Gossip, "west"),
		sni.Internal(sni.ControlPlane, "nosuch"),
		paymentSNI,
		xds.ClusterName(8080, "", "nosuch.shop.svc.cluster.local"),
	}
	for _, name := range refused {
		if r, err := gw.Routes.Route(name); err == nil {
			t.Errorf("east's gateway routes %s to %v", name, r.Endpoints)
		}
		// And on the wire: the connection ends before a handshake.
		c, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{ServerName: name, InsecureSkipVerify: true})
		if err == nil {
			c.Close()
			t.Errorf("a TLS handshake for %s through east's gateway succeeded", name)
		}
	}
	fedtest.Eventually(t, 5*time.Second, "every refusal counted", func() bool {
		return gw.Stats().Refused[eastwest.RefusedUnknownSNI] == uint64(len(refused))
	})
	for _, name := range refused {
		if n := gw.Routed(name); n != 0 {
			t.Errorf("east's gateway routed %d connections for %s", n, name)
		}
	}
}
