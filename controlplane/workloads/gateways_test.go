package workloads_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/testport"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Acceptance 2 through gateways, with central and east on different
// networks: the VM's application in central calls payment in east over
// its sidecar's outbound listener, through east's gateway, and payment
// sees the VM's SPIFFE ID; a workload of east calls the VM's application
// through central's gateway and the sidecar's inbound listener; a caller
// of a trust domain outside the federation is refused.
func echoServer(t *testing.T, l net.Listener, prefix string, seen func(net.Conn)) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				if seen != nil {
					seen(c)
				}
				_, _ = io.WriteString(c, prefix+line)
			}()
		}
	}()
}

// say sends msg as a line on c and returns the answer line.
func say(c net.Conn, msg string) (string, error) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

// Acceptance 2 through gateways, with central and east on different
// networks: the VM's application in central calls payment in east over
// its sidecar's outbound listener, through east's gateway, and payment
// sees the VM's SPIFFE ID; a workload of east calls the VM's application
// through central's gateway and the sidecar's inbound listener; a caller
// of a trust domain outside the federation is refused.
func TestIntegrationVMAcrossClustersThroughGateways(t *testing.T) {
	t.Parallel()
	buildBinaries()
	tm := fedtest.NewMesh(t, testTimers)
	central := startVMCluster(t, tm, "central", 2*time.Second, time.Minute)
	baristaID := spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/barista")

	// east, with payment behind its gateway: a TLS server that accepts
	// only the VM's identity.
	tm.Join("east")
	eastLis := fedtest.GatewayListener(t)
	eastServices := fedtest.NewSource()
	eastCP := tm.StartControlPlane("east", controlplane.Config{
		Locality: &registry.Locality{Region: "us-east", Zone: "b"}, Gateway: eastLis.Addr().String(), Source: eastServices,
	})
	east := eastCP.Member()
	paymentID := spiffeid.RequireFromString("spiffe://east.shop/ns/shop/sa/payment")
	paymentCred, err := east.Authority().IssueCredential(paymentID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	payment, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(paymentCred, east.Bundles(), tlsconfig.AuthorizeID(baristaID)))
	if err != nil {
		t.Fatal(err)
	}
	callers := make(chan string, 16)
	echoServer(t, payment, "payment: ", func(c net.Conn) {
		if id, err := x509svid.IDFromCert(c.(*tls.Conn).ConnectionState().PeerCertificates[0]); err == nil {
			callers <- id.String()
		}
	})
	paymentSvc := &registry.Service{
		Hostname: "payment.shop.svc.cluster.local", Namespace: "shop", Name: "payment",
		Ports: []*registry.Port{{Name: "http", Number: 8081, Protocol: "TCP"}},
		Endpoints: []*registry.Endpoint{{
			Address: "127.0.0.1", Ports: map[string]uint32{"http": uint32(payment.Addr().(*net.TCPAddr).Port)},
			Network: "net-east", Health: registrypb.Health_HEALTHY, SpiffeId: paymentID.String(),
			Locality: &registry.Locality{Region: "us-east", Zone: "b"},
		}},
	}
	eastServices.Set(paymentSvc)
	eastGW := tm.StartGateway(eastCP, eastLis, nil)

	// The VM: its application, and a sidecar importing payment.
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int64 // lines the application answered; probes send none
	echoServer(t, app, "barista: ", func(net.Conn) { requests.Add(1) })
	dir := t.TempDir()
	federate, agentBin := binaries(t)
	if out, err := central.configure(t, tm, federate, baristaGroup(app.Addr().(*net.TCPAddr).Port), dir, time.Minute); err != nil {
		t.Fatalf("vm configure: %v\n%s", err, out)
	}
	outbound := testport.Addr(t)
	sidecar := "inbound: {listen: 127.0.0.1:0}\noutbound:\n- {host: payment.shop.svc.cluster.local, port: 8081, listen: '" + outbound + "'}\n"
	writeSidecar(t, dir, sidecar)
	startAgent(t, agentBin, dir, t.TempDir())
	fedtest.Eventually(t, 15*time.Second, "east sees the VM healthy", func() bool {
		ep := baristaEndpoint(east, "central")
		return ep != nil && ep.GetHealth() == registrypb.Health_HEALTHY
	})
	// VM -> payment, through east's gateway.
	var answer string
	fedtest.Eventually(t, 10*time.Second, "the VM's call to payment", func() bool {
		c, err := net.Dial("tcp", outbound)
		if err != nil {
			return false
		}
		answer, err = say(c, "one latte")
		return err == nil
	})
	if answer != "payment: one latte\n" {
		t.Errorf("payment answered %q", answer)
	}
	select {
	case id := <-callers:
		if id != baristaID.String() {
			t.Errorf("payment saw caller %s, want %s", id, baristaID)
		}
	case <-time.After(5 * time.Second):
		t.Error("payment saw no caller identity")
	}
	// Peers reach east's control plane through its gateway too: count
	// only the connections routed by payment's name.
	if n := eastGW.Routed(xds.ClusterName(8081, "", paymentSvc.GetHostname())); n == 0 {
		t.Error("east's gateway routed nothing to payment: the VM reached payment directly")
	}

	// east's order -> the VM's application, through central's gateway.
	orderCred, err := east.Authority().IssueCredential(spiffeid.RequireFromString("spiffe://east.shop/ns/shop/sa/order"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	baristaSNI := xds.ClusterName(8083, "", "barista.shop.svc.cluster.local")
	callVM := func(cred *trust.Credential, bundles x509bundle.Source) (string, error) {
		conf := tlsconfig.MTLSClientConfig(cred, bundles, tlsconfig.AuthorizeID(baristaID))
		conf.ServerName = baristaSNI
		c, err := tls.Dial("tcp", central.gwAddr, conf)
		if err != nil {
			return "", err
		}
		return say(c, "one espresso")
	}
	routedBefore := central.gateway.Routed(baristaSNI)
	fedtest.Eventually(t, 10*time.Second, "east's call to the VM", func() bool {
		answer, err = callVM(orderCred, east.Bundles())
		return err == nil
	})
	if answer != "barista: one espresso\n" {
		t.Errorf("the VM answered %q", answer)
	}
	if central.gateway.Routed(baristaSNI) <= routedBefore {
		t.Error("central's gateway routed nothing to the VM for east's call")
	}
	served := requests.Load()

	// A caller from an unfederated trust domain, who even trusts central's
	// roots, is refused at the sidecar and never reaches the application.
	evilTD := spiffeid.RequireTrustDomainFromString("evil.example")
	evil, err := trust.NewAuthority(evilTD, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	evilCred, err := evil.IssueCredential(spiffeid.RequireFromPath(evilTD, "/ns/shop/sa/order"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := callVM(evilCred, central.cp.Member().Bundles()); err == nil || strings.Contains(got, "barista") {
		t.Errorf("an unfederated caller got %q, %v; want refused", got, err)
	}
	if n := requests.Load(); n != served {
		t.Errorf("the application answered %d requests after the refused call, want %d", n, served)
	}
}
