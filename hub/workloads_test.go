package hub

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/federate/federate/agent/agentpb"
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

// vmCluster is a control plane with VM workloads, wired as
// 'federate controlplane' wires them.
type vmCluster struct {
	tm        *testMember
	workloads *Workloads
	configDir string
}

func startVMCluster(t *testing.T, tm *testMesh, name string, grace, svidTTL time.Duration) *vmCluster {
	t.Helper()
	tm.join(name)
	late := &lateWorkloads{ready: make(chan struct{})}
	m := tm.startMemberWith(name, func(c *MemberConfig) {
		c.RegisterServices = func(s *grpc.Server) { agentpb.RegisterWorkloadsServer(s, late) }
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
	info := &registry.ClusterInfo{Network: "net-" + name, Locality: &registry.Locality{Region: "eu-central", Zone: "a"}}
	var mu sync.Mutex
	publish := func(services []*registry.Service) {
		mu.Lock()
		defer mu.Unlock()
		if err := m.member.Update(context.Background(), info, w.Merge(services)); err != nil {
			t.Errorf("update: %v", err)
		}
	}
	source := file.New(file.Config{Dir: configDir, Network: info.Network, Locality: info.Locality, TrustDomain: name + ".shop", Interval: 100 * time.Millisecond, Logger: tm.log})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = source.Run(ctx, publish) }()
	go func() { defer wg.Done(); _ = w.Run(ctx, publish) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return &vmCluster{tm: m, workloads: w, configDir: configDir}
}

// configure runs 'federate vm configure' against the cluster.
func (c *vmCluster) configure(t *testing.T, tm *testMesh, federate, group, outDir string, ttl time.Duration) (string, error) {
	t.Helper()
	wg := filepath.Join(t.TempDir(), "wg.yaml")
	if err := os.WriteFile(wg, []byte(group), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(federate, "vm", "configure", "-f", wg, "--cluster", c.tm.name, "-o", outDir,
		"--control-plane", c.tm.member.Addr(), "--gateway", c.tm.member.Addr(), "--internal-ip", "127.0.0.1",
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

func baristaGroup(probePort int) string {
	return `apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: barista, namespace: shop}
spec:
  metadata:
    labels: {app: barista}
  template:
    serviceAccount: barista
    ports: {http: 18083}
  probe:
    periodSeconds: 1
    failureThreshold: 1
    tcpSocket: {port: ` + strconv.Itoa(probePort) + `}
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
	if err := os.WriteFile(filepath.Join(dir, "sidecar.yaml"), []byte("inbound: {listen: 127.0.0.1:0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	agent := startAgent(t, agentBin, dir, state)

	eventually(t, 15*time.Second, "the entry is healthy in central", func() bool {
		ep := baristaEndpoint(central.tm.member, "central")
		return ep != nil && ep.GetHealth() == registrypb.Health_HEALTHY
	})
	registered := time.Now()
	eventually(t, 5*time.Second, "east sees the entry", func() bool {
		ep := baristaEndpoint(east.member, "central")
		return ep != nil && ep.GetHealth() == registrypb.Health_HEALTHY
	})
	if d := time.Since(registered); d > time.Second {
		t.Errorf("east saw the entry %s after central, want within 1s", d)
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
