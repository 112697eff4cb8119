package hub

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/file"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
)

// lateWorkloads serves the Workloads API for a member that must exist
// before its Workloads can: calls wait until set.
type lateWorkloads struct {
	agentpb.UnimplementedWorkloadsServer
	ready chan struct{}
	w     *Workloads
}

func (l *lateWorkloads) get() *Workloads { <-l.ready; return l.w }
func (l *lateWorkloads) CreateBootstrap(ctx context.Context, r *agentpb.CreateBootstrapRequest) (*agentpb.CreateBootstrapResponse, error) {
	return l.get().CreateBootstrap(ctx, r)
}
func (l *lateWorkloads) Bootstrap(ctx context.Context, r *agentpb.BootstrapRequest) (*agentpb.BootstrapResponse, error) {
	return l.get().Bootstrap(ctx, r)
}
func (l *lateWorkloads) Renew(ctx context.Context, r *agentpb.RenewRequest) (*agentpb.RenewResponse, error) {
	return l.get().Renew(ctx, r)
}
func (l *lateWorkloads) Connect(s grpc.BidiStreamingServer[agentpb.AgentMessage, agentpb.AgentConfig]) error {
	return l.get().Connect(s)
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// binaries builds the federate CLI and the agent once per test run.
func binaries(t *testing.T) (federate, agent string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "federate-vm-test-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", buildDir+"/", "../cmd/federate", "../cmd/federate-agent").CombinedOutput()
		if err != nil {
			buildErr = &buildError{out: string(out), err: err}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "federate"), filepath.Join(buildDir, "federate-agent")
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + e.out }

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

const baristaConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: barista, namespace: shop}
export: true
spec:
  hosts: [barista.shop.svc.cluster.local]
  ports: [{number: 8083, name: http, protocol: HTTP}]
  workloadSelector:
    labels: {app: barista}
`

// vmCluster is a control plane with VM workloads and its east-west
// gateway, wired as 'federate controlplane' wires them.
type vmCluster struct {
	tm        *testMember
	workloads *Workloads
	gateway   *clusterGateway
	configDir string
}

// clusterGateway is a cluster's real east-west gateway, configured over
// ADS by its control plane: the cluster's own services, and its internal
// names routed to the control plane's API and gossip listeners.
type clusterGateway struct {
	gw     *eastwest.Gateway
	lis    *net.TCPListener
	config *xds.Server
}

// newClusterGateway binds the gateway's port, so that the cluster can
// announce it before the gateway runs; register config on the member.
func newClusterGateway(t *testing.T, ctx context.Context, tm *testMesh) *clusterGateway {
	t.Helper()
	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return &clusterGateway{lis: lis, config: xds.NewServer(ctx, tm.log)}
}

func (g *clusterGateway) addr() string { return g.lis.Addr().String() }

// announce is the gateway as the cluster's ClusterInfo lists it.
func (g *clusterGateway) announce(network string) *registry.Gateway {
	return &registry.Gateway{Address: "127.0.0.1", Port: uint32(g.lis.Addr().(*net.TCPAddr).Port), Network: network}
}

// start rebuilds the gateway's configuration on every change of m's view
// and runs the gateway, until ctx is done or the test ends.
func (g *clusterGateway) start(t *testing.T, ctx context.Context, tm *testMesh, m *testMember, network string) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	build := func(version int) {
		snap, err := xds.Build(xds.Input{
			Version: strconv.Itoa(version), Network: network, Services: m.member.Services(m.name), Cluster: m.name,
			Internal: map[sni.Component]string{sni.ControlPlane: m.member.Addr(), sni.Gossip: m.member.GossipListenAddr()},
		})
		if err == nil {
			err = g.config.Update(ctx, snap)
		}
		if err != nil && ctx.Err() == nil {
			t.Errorf("%s's gateway configuration: %v", m.name, err)
		}
	}
	changed := m.member.Changed()
	build(1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for v := 2; ; v++ {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			changed = m.member.Changed()
			build(v)
		}
	}()
	var served <-chan error
	t.Cleanup(func() {
		cancel()
		<-done
		if served != nil {
			<-served
		}
	})
	g.gw, served = tm.startGateway(ctx, m, g.lis)
}

func startVMCluster(t *testing.T, tm *testMesh, name string, grace, svidTTL time.Duration) *vmCluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tm.join(name)
	late := &lateWorkloads{ready: make(chan struct{})}
	gateway := newClusterGateway(t, ctx, tm)
	m := tm.startMemberWith(name, func(c *MemberConfig) {
		c.RegisterServices = func(s *grpc.Server) {
			agentpb.RegisterWorkloadsServer(s, late)
			gateway.config.Register(s)
		}
	})
	configDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(configDir, "barista.yaml"), []byte(baristaConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := NewWorkloads(WorkloadsConfig{Member: m.member, Store: m.store, ConfigDir: configDir, Grace: grace, SVIDTTL: svidTTL, Logger: tm.log})
	if err != nil {
		t.Fatal(err)
	}
	late.w = w
	close(late.ready)
	network := "net-" + name
	info := &registry.ClusterInfo{
		Network: network, Locality: &registry.Locality{Region: "eu-central", Zone: "a"},
		Gateways: []*registry.Gateway{gateway.announce(network)},
	}
	var mu sync.Mutex
	publish := func(services []*registry.Service) {
		mu.Lock()
		defer mu.Unlock()
		if err := m.member.Update(context.Background(), info, w.Merge(services)); err != nil {
			t.Errorf("update: %v", err)
		}
	}
	source := file.New(file.Config{Dir: configDir, Network: info.Network, Locality: info.Locality, TrustDomain: name + ".shop", Interval: 100 * time.Millisecond, Logger: tm.log})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = source.Run(ctx, publish) }()
	go func() { defer wg.Done(); _ = w.Run(ctx, publish) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	gateway.start(t, ctx, tm, m, network)
	return &vmCluster{tm: m, workloads: w, gateway: gateway, configDir: configDir}
}

// configure runs 'federate vm configure' against the cluster.
func (c *vmCluster) configure(t *testing.T, tm *testMesh, federate, group, outDir string, ttl time.Duration) (string, error) {
	t.Helper()
	wg := filepath.Join(t.TempDir(), "wg.yaml")
	if err := os.WriteFile(wg, []byte(group), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(federate, "vm", "configure", "-f", wg, "--cluster", c.tm.name, "-o", outDir,
		"--control-plane", c.tm.member.Addr(), "--gateway", c.gateway.addr(), "--internal-ip", "127.0.0.1",
		"--token-ttl", ttl.String(), "--credential", filepath.Join(tm.dir, "hub", AdminCredFile))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// agentProcess is a running federate-agent.
type agentProcess struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startAgent(t *testing.T, bin, configDir, stateDir string) *agentProcess {
	t.Helper()
	p := &agentProcess{out: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(bin, "--config-dir", configDir, "--state-dir", stateDir, "--log-level", "debug")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("agent output:\n%s", p.out)
		}
	})
	return p
}

func (p *agentProcess) stop() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// exitError waits for the agent to fail and returns its output.
func (p *agentProcess) exitError(t *testing.T) string {
	t.Helper()
	select {
	case err := <-p.done:
		if err == nil {
			t.Fatalf("the agent exited cleanly, want a failure:\n%s", p.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the agent still runs, want a failure:\n%s", p.out)
	}
	return p.out.String()
}

// baristaEndpoint returns the VM's endpoint in observer's view of owner's
// barista service.
func baristaEndpoint(observer *Member, owner string) *registry.Endpoint {
	for _, s := range observer.Services(owner) {
		if s.GetHostname() != "barista.shop.svc.cluster.local" {
			continue
		}
		for _, ep := range s.GetEndpoints() {
			if ep.GetAddress() == "127.0.0.1" {
				return ep
			}
		}
	}
	return nil
}

// baristaGroup is the WorkloadGroup of VMs whose application listens on
// port, which the probe checks.
func baristaGroup(port int) string {
	return `apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: barista, namespace: shop}
spec:
  metadata:
    labels: {app: barista}
  template:
    serviceAccount: barista
    ports: {http: ` + strconv.Itoa(port) + `}
  probe:
    periodSeconds: 1
    failureThreshold: 1
    tcpSocket: {port: ` + strconv.Itoa(port) + `}
`
}

// An agent process bootstraps from the files 'federate vm configure'
// wrote, registers its WorkloadEntry, which every cluster sees; a failing
// probe makes it unhealthy everywhere; stopping the agent makes it
// unhealthy at once and removes it after the grace period. The token is
// good once: a second bootstrap with it is refused, but a restart with the
// saved SVID works.
func TestIntegrationVMAgentRegistersAndWithdraws(t *testing.T) {
	federate, agentBin := binaries(t)
	tm := newTestMesh(t, testTimers)
	const grace = 2 * time.Second
	central := startVMCluster(t, tm, "central", grace, time.Minute)
	east := tm.addCluster("east")

	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dir := t.TempDir()
	out, err := central.configure(t, tm, federate, baristaGroup(app.Addr().(*net.TCPAddr).Port), dir, time.Minute)
	if err != nil {
		t.Fatalf("vm configure: %v\n%s", err, out)
	}
	for _, f := range []string{"cluster.env", "mesh.yaml", "root-cert.pem", "istio-token", "hosts"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("vm configure did not write %s: %v", f, err)
		}
	}
	// The agent knows the control plane only by its internal name, which
	// the hosts file maps to the gateway: no file holds its real address.
	cpPort := central.tm.member.Addr()[strings.LastIndex(central.tm.member.Addr(), ":"):]
	for _, f := range []string{"cluster.env", "mesh.yaml", "hosts"} {
		data, _ := os.ReadFile(filepath.Join(dir, f))
		if strings.Contains(string(data), cpPort) {
			t.Errorf("%s names the control plane's own port %s:\n%s", f, cpPort, data)
		}
	}
	env, _ := os.ReadFile(filepath.Join(dir, "cluster.env"))
	gwPort := central.gateway.addr()[strings.LastIndex(central.gateway.addr(), ":"):]
	if want := "CA_ADDR='controlplane.central.federate.internal" + gwPort + "'"; !strings.Contains(string(env), want) {
		t.Errorf("cluster.env lacks %s:\n%s", want, env)
	}
	if hosts, _ := os.ReadFile(filepath.Join(dir, "hosts")); string(hosts) != "127.0.0.1 controlplane.central.federate.internal\n" {
		t.Errorf("hosts = %q, want the control plane's name at the gateway's IP", hosts)
	}
	if err := os.WriteFile(filepath.Join(dir, "sidecar.yaml"), []byte("inbound: {listen: 127.0.0.1:0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n := central.gateway.gw.Stats().Relayed; n != 0 {
		t.Fatalf("the gateway relayed %d connections before the agent started", n)
	}
	state := t.TempDir()
	agent := startAgent(t, agentBin, dir, state)

	// From the moment the control plane registers the entry, every
	// cluster's registry must list it within 1s; polled finely to measure.
	var registered, inCentral, inEast time.Time
	poll := time.NewTicker(2 * time.Millisecond)
	deadline := time.After(15 * time.Second)
	for inCentral.IsZero() || inEast.IsZero() {
		select {
		case <-deadline:
			t.Fatalf("the entry did not appear everywhere: registered %v, central %v, east %v", registered, inCentral, inEast)
		case <-poll.C:
		}
		now := time.Now()
		if registered.IsZero() && len(central.workloads.Entries()) == 1 {
			registered = now
		}
		if inCentral.IsZero() && baristaEndpoint(central.tm.member, "central") != nil {
			inCentral = now
		}
		if inEast.IsZero() && baristaEndpoint(east.member, "central") != nil {
			inEast = now
		}
	}
	poll.Stop()
	if d := inEast.Sub(registered); d > time.Second {
		t.Errorf("east listed the entry %s after it registered, want within 1s", d)
	}
	t.Logf("through the gateway: the entry was in central's registry %s and east's %s after it registered",
		inCentral.Sub(registered), inEast.Sub(registered))
	eventually(t, 15*time.Second, "the entry is healthy in central and east", func() bool {
		a, b := baristaEndpoint(central.tm.member, "central"), baristaEndpoint(east.member, "central")
		return a.GetHealth() == registrypb.Health_HEALTHY && b.GetHealth() == registrypb.Health_HEALTHY
	})
	// The token trade and the registration stream both crossed the gateway.
	if st := central.gateway.gw.Stats(); st.Relayed < 2 || st.Refused[eastwest.RefusedUnknownSNI] > 0 {
		t.Errorf("gateway stats %+v: want at least 2 relayed connections (bootstrap and registration), none refused", st)
	}
	entries := central.workloads.Entries()
	if len(entries) != 1 || entries[0].Name != "barista-127.0.0.1" || entries[0].Annotations[AutoRegistrationAnnotation] != "barista" {
		t.Fatalf("entries = %+v, want barista-127.0.0.1 owned by group barista", entries)
	}
	if ep := baristaEndpoint(east.member, "central"); ep.GetSpiffeId() != "spiffe://central.shop/ns/shop/sa/barista" {
		t.Errorf("endpoint identity %s", ep.GetSpiffeId())
	}

	// The probe fails: the entry is withdrawn from routing everywhere.
	app.Close()
	eventually(t, 10*time.Second, "east sees the entry unhealthy after the probe fails", func() bool {
		ep := baristaEndpoint(east.member, "central")
		return ep != nil && ep.GetHealth() == registrypb.Health_UNHEALTHY
	})

	// Stopped: unhealthy at once (it already is), then removed after the grace period.
	agent.stop()
	stopped := time.Now()
	eventually(t, 10*time.Second, "the entry is removed everywhere", func() bool {
		return baristaEndpoint(central.tm.member, "central") == nil && baristaEndpoint(east.member, "central") == nil
	})
	if d := time.Since(stopped); d < grace {
		t.Errorf("the entry was removed %s after the agent stopped, before the %s grace period", d, grace)
	} else {
		t.Logf("the entry was removed everywhere %s after the agent stopped (grace %s)", d, grace)
	}

	// A restart uses the saved SVID; the token is not needed again.
	if err := os.Remove(filepath.Join(dir, "istio-token")); err != nil {
		t.Fatal(err)
	}
	restarted := startAgent(t, agentBin, dir, state)
	eventually(t, 15*time.Second, "the restarted agent registers with its saved SVID", func() bool {
		return baristaEndpoint(east.member, "central") != nil
	})
	restarted.stop()
}

// Bad bootstrap input fails clearly and registers nothing.
func TestIntegrationVMAgentBadInput(t *testing.T) {
	federate, agentBin := binaries(t)
	tm := newTestMesh(t, testTimers)
	central := startVMCluster(t, tm, "central", time.Second, time.Minute)

	fresh := func(ttl time.Duration) string {
		dir := t.TempDir()
		out, err := central.configure(t, tm, federate, baristaGroup(1), dir, ttl)
		if err != nil {
			t.Fatalf("vm configure: %v\n%s", err, out)
		}
		if err := os.WriteFile(filepath.Join(dir, "sidecar.yaml"), []byte("inbound: {listen: 127.0.0.1:0}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	expectFailure := func(name, dir string, want ...string) {
		t.Helper()
		out := startAgent(t, agentBin, dir, t.TempDir()).exitError(t)
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: the agent's error does not say %q:\n%s", name, w, out)
			}
		}
		if n := len(central.workloads.Entries()); n != 0 {
			t.Errorf("%s: %d entries registered", name, n)
		}
	}

	// A missing bootstrap file is named.
	dir := fresh(time.Minute)
	os.Remove(filepath.Join(dir, "root-cert.pem"))
	expectFailure("missing root-cert.pem", dir, filepath.Join(dir, "root-cert.pem"), "missing")

	// A malformed one too.
	dir = fresh(time.Minute)
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte("defaultConfig: [unclosed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	expectFailure("malformed mesh.yaml", dir, filepath.Join(dir, "mesh.yaml"), "invalid YAML")

	// A wrong root certificate: the control plane does not verify.
	dir = fresh(time.Minute)
	other := fresh(time.Minute)
	otherMesh := newTestMesh(t, testTimers)
	otherCluster := startVMCluster(t, otherMesh, "central", time.Second, time.Minute)
	if out, err := otherCluster.configure(t, otherMesh, federate, baristaGroup(1), other, time.Minute); err != nil {
		t.Fatalf("vm configure: %v\n%s", err, out)
	}
	roots, _ := os.ReadFile(filepath.Join(other, "root-cert.pem"))
	if err := os.WriteFile(filepath.Join(dir, "root-cert.pem"), roots, 0o644); err != nil {
		t.Fatal(err)
	}
	expectFailure("wrong root certificate", dir, "does not verify against", "root-cert.pem")

	// A used token.
	dir = fresh(time.Minute)
	good := startAgent(t, agentBin, dir, t.TempDir())
	eventually(t, 15*time.Second, "the first agent registers", func() bool { return len(central.workloads.Entries()) == 1 })
	good.stop()
	eventually(t, 10*time.Second, "its entry is removed", func() bool { return len(central.workloads.Entries()) == 0 })
	expectFailure("reused token", dir, "already used")

	// An expired token.
	dir = fresh(time.Second)
	time.Sleep(2 * time.Second) // the token's lifetime is whole seconds
	expectFailure("expired token", dir, "expired")

	// A WorkloadGroup without a service account is refused by configure.
	out, err := central.configure(t, tm, federate, strings.Replace(baristaGroup(1), "serviceAccount: barista", `serviceAccount: ""`, 1), t.TempDir(), time.Minute)
	if err == nil || !strings.Contains(out, "spec.template.serviceAccount is empty") {
		t.Errorf("vm configure with no service account: %v\n%s", err, out)
	}
}

// With one-minute tokens and SVIDs, the agent renews its SVID with the
// SVID itself, so it stays registered past the token's expiry, and a
// restart after it still works.
func TestIntegrationVMAgentRenewsPastTokenExpiry(t *testing.T) {
	federate, agentBin := binaries(t)
	tm := newTestMesh(t, testTimers)
	central := startVMCluster(t, tm, "central", time.Second, time.Minute)
	dir, state := t.TempDir(), t.TempDir()
	tokenExpiry := time.Now().Add(time.Minute)
	group := strings.Replace(baristaGroup(1), "  probe:\n    periodSeconds: 1\n    failureThreshold: 1\n    tcpSocket: {port: 1}\n", "", 1)
	if out, err := central.configure(t, tm, federate, group, dir, time.Minute); err != nil {
		t.Fatalf("vm configure: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "sidecar.yaml"), []byte("inbound: {listen: 127.0.0.1:0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := startAgent(t, agentBin, dir, state)
	connected := func() bool {
		e := central.workloads.Entries()
		return len(e) == 1 && e[0].Connected && e[0].Healthy
	}
	eventually(t, 15*time.Second, "the agent registers", connected)
	first, err := trust.LoadCredential(filepath.Join(state, "svid.pem"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "the token expires while the agent runs", func() bool {
		return time.Now().After(tokenExpiry.Add(2 * time.Second))
	})
	if !connected() {
		t.Fatalf("the agent is no longer registered after the token expired:\n%s", agent.out)
	}
	cur, err := trust.LoadCredential(filepath.Join(state, "svid.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !cur.Leaf().NotAfter.After(first.Leaf().NotAfter) || !time.Now().Before(cur.Expiry()) {
		t.Fatalf("the saved SVID was not renewed: first expires %s, now %s", first.Expiry(), cur.Expiry())
	}
	agent.stop()
	startAgent(t, agentBin, dir, state)
	eventually(t, 15*time.Second, "the agent restarts after the token expired", connected)
}

// echoServer answers each connection on l with prefix and the first line
// it reads; seen, if set, is called with the connection once the line is
// read.
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
	federate, agentBin := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tm := newTestMesh(t, testTimers)
	central := startVMCluster(t, tm, "central", 2*time.Second, time.Minute)
	baristaID := spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/barista")

	// east, with payment behind its gateway: a TLS server that accepts
	// only the VM's identity.
	tm.join("east")
	eastGW := newClusterGateway(t, ctx, tm)
	east := tm.startMemberWith("east", func(c *MemberConfig) { c.RegisterServices = eastGW.config.Register })
	paymentID := spiffeid.RequireFromString("spiffe://east.shop/ns/shop/sa/payment")
	paymentCred, err := east.member.Authority().IssueCredential(paymentID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	payment, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(paymentCred, east.member.Bundles(), tlsconfig.AuthorizeID(baristaID)))
	if err != nil {
		t.Fatal(err)
	}
	callers := make(chan string, 16)
	echoServer(t, payment, "payment: ", func(c net.Conn) {
		if id, err := x509svid.IDFromCert(c.(*tls.Conn).ConnectionState().PeerCertificates[0]); err == nil {
			callers <- id.String()
		}
	})
	eastInfo := &registry.ClusterInfo{
		Network: "net-east", Locality: &registry.Locality{Region: "us-east", Zone: "b"}, TrustDomain: "east.shop",
		Gateways: []*registry.Gateway{eastGW.announce("net-east")},
	}
	paymentSvc := &registry.Service{
		Hostname: "payment.shop.svc.cluster.local", Namespace: "shop", Name: "payment",
		Ports: []*registry.Port{{Name: "http", Number: 8081, Protocol: "TCP"}},
		Endpoints: []*registry.Endpoint{{
			Address: "127.0.0.1", Ports: map[string]uint32{"http": uint32(payment.Addr().(*net.TCPAddr).Port)},
			Network: "net-east", Health: registrypb.Health_HEALTHY, SpiffeId: paymentID.String(),
			Locality: eastInfo.Locality,
		}},
	}
	if err := east.member.Update(ctx, eastInfo, []*registry.Service{paymentSvc}); err != nil {
		t.Fatal(err)
	}
	eastGW.start(t, ctx, tm, east, "net-east")

	// The VM: its application, and a sidecar importing payment.
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var requests atomic.Int64 // lines the application answered; probes send none
	echoServer(t, app, "barista: ", func(net.Conn) { requests.Add(1) })
	dir := t.TempDir()
	if out, err := central.configure(t, tm, federate, baristaGroup(app.Addr().(*net.TCPAddr).Port), dir, time.Minute); err != nil {
		t.Fatalf("vm configure: %v\n%s", err, out)
	}
	outbound := freeAddr(t)
	sidecar := "inbound: {listen: 127.0.0.1:0}\noutbound:\n- {host: payment.shop.svc.cluster.local, port: 8081, listen: '" + outbound + "'}\n"
	if err := os.WriteFile(filepath.Join(dir, "sidecar.yaml"), []byte(sidecar), 0o644); err != nil {
		t.Fatal(err)
	}
	startAgent(t, agentBin, dir, t.TempDir())
	eventually(t, 15*time.Second, "east sees the VM healthy", func() bool {
		ep := baristaEndpoint(east.member, "central")
		return ep != nil && ep.GetHealth() == registrypb.Health_HEALTHY
	})
	// VM -> payment, through east's gateway.
	var answer string
	eventually(t, 10*time.Second, "the VM's call to payment", func() bool {
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
	if n := eastGW.gw.Stats().Relayed; n == 0 {
		t.Error("east's gateway relayed nothing: the VM reached payment directly")
	}

	// east's order -> the VM's application, through central's gateway.
	orderCred, err := east.member.Authority().IssueCredential(spiffeid.RequireFromString("spiffe://east.shop/ns/shop/sa/order"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	baristaSNI := xds.ClusterName(8083, "", "barista.shop.svc.cluster.local")
	callVM := func(cred *trust.Credential, bundles x509bundle.Source) (string, error) {
		conf := tlsconfig.MTLSClientConfig(cred, bundles, tlsconfig.AuthorizeID(baristaID))
		conf.ServerName = baristaSNI
		c, err := tls.Dial("tcp", central.gateway.addr(), conf)
		if err != nil {
			return "", err
		}
		return say(c, "one espresso")
	}
	relayedBefore := central.gateway.gw.Stats().Relayed
	eventually(t, 10*time.Second, "east's call to the VM", func() bool {
		answer, err = callVM(orderCred, east.member.Bundles())
		return err == nil
	})
	if answer != "barista: one espresso\n" {
		t.Errorf("the VM answered %q", answer)
	}
	if central.gateway.gw.Stats().Relayed <= relayedBefore {
		t.Error("central's gateway relayed nothing for east's call")
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
	if got, err := callVM(evilCred, central.tm.member.Bundles()); err == nil || strings.Contains(got, "barista") {
		t.Errorf("an unfederated caller got %q, %v; want refused", got, err)
	}
	if n := requests.Load(); n != served {
		t.Errorf("the application answered %d requests after the refused call, want %d", n, served)
	}
}

// An agent's targets come from the shared locality code: split horizon
// replaces east's endpoints by east's gateway, weighted by the endpoints
// behind it, and the agent policy (outlier detection on) orders them by
// locality; the agent's picker then sends everything to priority 0 while
// it is healthy. A DestinationRule's policy replaces the default.
func TestAgentTargetsFollowLocalityPolicy(t *testing.T) {
	payment := func(cluster, network string, loc *registry.Locality, addrs ...string) *registry.Service {
		s := &registry.Service{Hostname: "payment.shop.svc.cluster.local", Namespace: "shop", Ports: []*registry.Port{{Name: "http", Number: 8081}}}
		for _, a := range addrs {
			s.Endpoints = append(s.Endpoints, &registry.Endpoint{
				Address: a, Ports: map[string]uint32{"http": 9081}, Network: network, Locality: loc,
				Health: registrypb.Health_HEALTHY, SpiffeId: "spiffe://" + cluster + ".shop/ns/shop/sa/payment",
			})
		}
		return s
	}
	zoneA := &registry.Locality{Region: "eu-central", Zone: "a"}
	zoneB := &registry.Locality{Region: "eu-central", Zone: "b"}
	usEast := &registry.Locality{Region: "us-east", Zone: "b"}
	local := payment("central", "net-central", zoneA, "10.0.0.1")
	local.Endpoints = append(local.Endpoints, payment("central", "net-central", zoneB, "10.0.0.2").Endpoints...)
	sources := []locality.Source{
		{Cluster: "central", Info: &registry.ClusterInfo{Network: "net-central", Locality: zoneA}, Service: local},
		{Cluster: "east", Info: &registry.ClusterInfo{Network: "net-east", Locality: usEast, Gateways: []*registry.Gateway{{Address: "192.0.2.7", Port: 15443}}},
			Service: payment("east", "net-east", usEast, "10.1.0.1", "10.1.0.2")},
	}
	client := locality.Client{Locality: locality.FromProto(zoneA), Network: "net-central", Cluster: "central"}
	w := &Workloads{log: slog.New(slog.DiscardHandler)}

	up := &agentpb.Upstream{Hostname: "payment.shop.svc.cluster.local", Balance: map[uint32]*agentpb.Balance{}}
	got := map[string]*agentpb.Target{}
	for _, tg := range w.targets(client, sources[0].Service.GetPorts()[0], sources, up) {
		got[tg.GetAddress()] = tg
	}
	want := map[string]struct {
		priority, weight, port uint32
		gateway                bool
		ids                    []string
	}{
		"10.0.0.1":  {0, 1, 9081, false, []string{"spiffe://central.shop/ns/shop/sa/payment"}},
		"10.0.0.2":  {1, 1, 9081, false, []string{"spiffe://central.shop/ns/shop/sa/payment"}},
		"192.0.2.7": {2, 2, 15443, true, []string{"spiffe://east.shop/ns/shop/sa/payment"}},
	}
	if len(got) != len(want) {
		t.Fatalf("targets %v, want %d", got, len(want))
	}
	for addr, w := range want {
		g := got[addr]
		if g.GetPriority() != w.priority || g.GetWeight() != w.weight || g.GetPorts()[8081] != w.port || g.GetGateway() != w.gateway || !slices.Equal(g.GetSpiffeIds(), w.ids) {
			t.Errorf("target %s = %v, want priority %d weight %d port %d gateway %v ids %v", addr, g, w.priority, w.weight, w.port, w.gateway, w.ids)
		}
	}
	if b := up.GetBalance()[8081]; b.GetPanicThreshold() != locality.DefaultPanicThreshold || b.GetOverprovisioning() != locality.DefaultOverprovisioning {
		t.Errorf("balance %v, want the default panic threshold and overprovisioning", b)
	}
	up.Targets = slices.Collect(maps.Values(got))
	if shares := agent.NewPicker(up, 8081).Shares(); shares["10.0.0.1:9081"] != 1 {
		t.Errorf("the agent's picker shares %v, want all on the same-zone endpoint", shares)
	}

	// Without outlier detection (Istio's default DestinationRule), no
	// failover: one priority for all.
	w.cfg.Policy = func(string, uint32) locality.Policy { return locality.DefaultPolicy() }
	up.Targets = w.targets(client, sources[0].Service.GetPorts()[0], sources, up)
	for _, tg := range up.Targets {
		if tg.GetPriority() != 0 {
			t.Errorf("target %s has priority %d under a policy without failover", tg.GetAddress(), tg.GetPriority())
		}
	}
	if shares := agent.NewPicker(up, 8081).Shares(); shares["192.0.2.7:15443"] < 0.49 || shares["192.0.2.7:15443"] > 0.51 {
		t.Errorf("the agent's picker shares %v, want half through east's gateway (2 of 4 endpoints)", shares)
	}
}
