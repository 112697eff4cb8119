package fedtest

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/eastwest/xdsclient"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// Gateway is a cluster's east-west gateway, configured over ADS by the
// cluster's control plane with the SVID the control plane wrote for it,
// as cmd/eastwest-gateway wires it.
type Gateway struct {
	*eastwest.Gateway
	Routes *xdsclient.Routes
	// Stop stops the gateway and its ADS client; the test fails if the
	// gateway stopped with an error. The test's cleanup calls it too.
	Stop   func()
	router *countingRouter
}

// Routed returns how many connections the gateway routed by serverName.
func (g *Gateway) Routed(serverName string) uint64 {
	g.router.mu.Lock()
	defer g.router.mu.Unlock()
	return g.router.routed[serverName]
}

// countingRouter counts the connections routed by each server name.
type countingRouter struct {
	*xdsclient.Routes // and its Loaded, which the gateway waits for

	mu     sync.Mutex // guards routed
	routed map[string]uint64
}

func (r *countingRouter) Route(serverName string) (eastwest.Route, error) {
	route, err := r.Routes.Route(serverName)
	if err == nil {
		r.mu.Lock()
		r.routed[serverName]++
		r.mu.Unlock()
	}
	return route, err
}

// GatewayListener binds a loopback port for a cluster's gateway, so that
// its control plane can announce it (controlplane.Config.Gateway) before
// the gateway runs.
func GatewayListener(tb testing.TB) *net.TCPListener {
	tb.Helper()
	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	return lis
}

// StartGateway runs an east-west gateway on lis for the control plane cp
// and returns once it has its first routing table. Its DrainTimeout is
// 100 ms; configure, if set, adjusts the gateway's Config: a DrainTimeout
// of a millisecond makes Stop a crash.
func (tm *Mesh) StartGateway(cp *ControlPlane, lis *net.TCPListener, configure func(*eastwest.Config)) *Gateway {
	tb := tm.t
	tb.Helper()
	name := cp.Member().Cluster()
	cred, err := trust.LoadCredential(filepath.Join(cp.Dir, controlplane.GatewayCredentialFile))
	if err != nil {
		tb.Fatal(err)
	}
	cas, err := trust.LoadCertificates(filepath.Join(cp.Dir, membership.CAFile))
	if err != nil {
		tb.Fatal(err)
	}
	meshTD := spiffeid.RequireTrustDomainFromString(cp.Member().Mesh())
	conn, err := grpc.NewClient(cp.Member().Addr(), grpc.WithTransportCredentials(credentials.NewTLS(
		trust.ClientTLS(cred, trust.Bundle(meshTD, cas...), tlsconfig.AuthorizeID(membership.ClusterID(meshTD, name))))))
	if err != nil {
		tb.Fatal(err)
	}
	log := tm.log.With("node", name+"-gw")
	// Peers' gossip and API connections run through a gateway its
	// control plane announces: stopping at the end of a test does not
	// wait for them.
	cfg := eastwest.Config{Logger: log, DrainTimeout: 100 * time.Millisecond}
	if configure != nil {
		configure(&cfg)
	}
	routes := &xdsclient.Routes{}
	router := &countingRouter{Routes: routes, routed: make(map[string]uint64)}
	cfg.Router = router
	gw, err := eastwest.New(cfg)
	if err != nil {
		conn.Close()
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	clientDone := make(chan error, 1)
	go func() {
		clientDone <- xdsclient.NewClient(xdsclient.ClientConfig{Conn: conn, NodeID: name + "-gw", OnUpdate: routes.Set, Logger: log}).Run(ctx)
	}()
	served := make(chan error, 1)
	go func() { served <- gw.Serve(ctx, lis) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-served; err != nil {
				tb.Errorf("%s's gateway: %v", name, err)
			}
			if err := <-clientDone; err != nil {
				tb.Errorf("%s's gateway's ADS client: %v", name, err)
			}
			conn.Close()
		})
	}
	tb.Cleanup(stop)
	Eventually(tb, 10*time.Second, name+"'s gateway routing table", routes.Ready)
	return &Gateway{Gateway: gw, Routes: routes, Stop: stop, router: router}
}

// MainThen is Main with cleanup run once the tests are done, before the
// leak check: for what a package shares between its tests, such as built
// binaries.
func MainThen(m *testing.M, cleanup func()) {
	code := m.Run()
	cleanup()
	if code == 0 {
		if leaked := leakedGoroutines(10 * time.Second); leaked != "" {
			os.Stderr.WriteString("goroutines still running after the tests:\n" + leaked + "\n")
			code = 1
		}
	}
	os.Exit(code)
}
