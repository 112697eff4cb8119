package workloads_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/registry"
)

const baristaConfig = `apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceExport
metadata: {name: barista, namespace: shop}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: barista, namespace: shop}
spec:
  hosts: [barista.shop.svc.cluster.local]
  ports: [{number: 8083, name: http, protocol: HTTP}]
  workloadSelector:
    labels: {app: barista}
`

// vmCluster is a control plane with VM workloads, the real assembly that
// 'federate controlplane' runs, behind its east-west gateway.
type vmCluster struct {
	name string
	cfg  controlplane.Config
	cp   *fedtest.ControlPlane
	// gateway is the gateway the cluster announces: peers reach the
	// control plane through it, and other clusters' workloads the VMs.
	gateway *fedtest.Gateway
	gwAddr  string
	// vmGateway is a second replica of the gateway at its own address,
	// which only the VMs are told about ('vm configure --gateway'), so
	// that its counters count the VMs' connections alone.
	vmGateway *fedtest.Gateway
	vmGwAddr  string
}

// startVMCluster starts it; configure, if set, adjusts the control
// plane's Config.
func startVMCluster(t *testing.T, tm *fedtest.Mesh, name string, grace, svidTTL time.Duration, configure ...func(*controlplane.Config)) *vmCluster {
	t.Helper()
	tm.Join(name)
	lis, vmLis := fedtest.GatewayListener(t), fedtest.GatewayListener(t)
	configDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(configDir, "barista.yaml"), []byte(baristaConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := controlplane.Config{
		Locality: &registry.Locality{Region: "eu-central", Zone: "a"}, ConfigDir: configDir,
		Gateway: lis.Addr().String(), VMGrace: grace, VMSVIDTTL: svidTTL,
	}
	for _, f := range configure {
		f(&cfg)
	}
	cp := tm.StartControlPlane(name, cfg)
	c := &vmCluster{name: name, cfg: cfg, cp: cp, gwAddr: lis.Addr().String(), vmGwAddr: vmLis.Addr().String()}
	c.gateway = tm.StartGateway(cp, lis, nil)
	c.vmGateway = tm.StartGateway(cp, vmLis, nil)
	return c
}

// restart stops the control plane and starts it again on the same
// address and data directory, as a rolling update does; the gateways
// follow it there. whileDown, if set, runs between the two.
func (c *vmCluster) restart(tm *fedtest.Mesh, whileDown func()) {
	cfg := c.cfg
	cfg.Listen = c.cp.Member().Addr()
	c.cp.Stop()
	if whileDown != nil {
		whileDown()
	}
	c.cp = tm.StartControlPlane(c.name, cfg)
}

// configure runs 'federate vm configure' against the cluster, for VMs
// that reach it through its VM gateway.
func (c *vmCluster) configure(t *testing.T, tm *fedtest.Mesh, federate, group, outDir string, ttl time.Duration) (string, error) {
	t.Helper()
	wg := filepath.Join(t.TempDir(), "wg.yaml")
	if err := os.WriteFile(wg, []byte(group), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(federate, "vm", "configure", "-f", wg, "--cluster", c.name, "-o", outDir,
		"--control-plane", c.cp.Member().Addr(), "--gateway", c.vmGwAddr, "--internal-ip", "127.0.0.1",
		"--token-ttl", ttl.String(), "--credential", filepath.Join(tm.Dir, "hub", hub.AdminCredFile))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// agentProcess is a running federate-agent.
type agentProcess struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed once the process has exited
	err  error         // how it exited; set before done is closed
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
	p := &agentProcess{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "--config-dir", configDir, "--state-dir", stateDir, "--log-level", "debug")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("agent output:\n%s", p.out)
		}
	})
	return p
}

// stop interrupts the agent and waits for it to exit, killing it after
// ten seconds.
func (p *agentProcess) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill kills the agent, as a crash of its VM would, and waits for it.
func (p *agentProcess) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// exitError waits for the agent to fail and returns its output.
func (p *agentProcess) exitError(t *testing.T) string {
	t.Helper()
	select {
	case <-p.done:
		if p.err == nil {
			t.Fatalf("the agent exited cleanly, want a failure:\n%s", p.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the agent still runs, want a failure:\n%s", p.out)
	}
	return p.out.String()
}

// baristaEndpoint returns the VM's endpoint in observer's view of owner's
// barista service.
func baristaEndpoint(observer *member.Member, owner string) *registry.Endpoint {
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

// startProbedApp stands in for a VM's application that only its probe
// reaches: it accepts and closes connections until the test ends, or until
// the test closes it to fail the probe.
func startProbedApp(t *testing.T) net.Listener {
	t.Helper()
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return app
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

// writeSidecar writes the VM's sidecar.yaml into its bootstrap directory.
func writeSidecar(t *testing.T, dir, sidecar string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "sidecar.yaml"), []byte(sidecar), 0o644); err != nil {
		t.Fatal(err)
	}
}
