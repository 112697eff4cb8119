package lab

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIntegrationLab builds the real binary, brings the lab up as separate
// processes, checks that every cluster sees every other, and that down
// leaves no process or directory behind.
func TestIntegrationLab(t *testing.T) { testLab(t, false) }

// TestIntegrationLabIsolated runs the same with every cluster in its own
// network namespace, where only gateways and the hub are reachable.
func TestIntegrationLabIsolated(t *testing.T) { testLab(t, true) }

func testLab(t *testing.T, isolate bool) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "federate")
	build := exec.Command("go", "build", "-o", tmp+"/", "github.com/federate/federate/cmd/federate", "github.com/federate/federate/cmd/eastwest-gateway", "github.com/federate/federate/cmd/federate-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir := filepath.Join(tmp, "lab")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	st, err := Up(ctx, Options{Dir: dir, Clusters: 3, Binary: bin, Out: &out, Isolate: isolate})
	if err != nil {
		t.Fatalf("lab up: %v\n%s", err, out.String())
	}
	t.Cleanup(func() { st.shutdown() })
	if !strings.Contains(out.String(), "[6/6] starting the coffee shop") {
		t.Errorf("progress output missing the last step:\n%s", out.String())
	}

	// lab.json records every process, and all of them run.
	saved, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(saved.Clusters) != 3 || saved.Hub.Addr == "" {
		t.Fatalf("lab.json: %+v", saved)
	}
	for _, pid := range saved.processes() {
		if !alive(pid) {
			t.Errorf("process %d is not running", pid)
		}
	}
	// Every control plane sees the coffee shop: 3 clusters, 4 services.
	for _, c := range saved.Clusters {
		resp, err := saved.Status(ctx, c.Name)
		if err != nil {
			t.Fatal(err)
		}
		services := 0
		for _, cs := range resp.GetClusters() {
			services += int(cs.GetServices())
			if cs.GetState() != "alive" {
				t.Errorf("%s sees %s %s", c.Name, cs.GetName(), cs.GetState())
			}
		}
		for _, cs := range resp.GetClusters() {
			for _, want := range saved.Clusters {
				if want.Name == cs.GetName() && cs.GetGateway() != want.Gateway.Addr {
					t.Errorf("%s sees %s's gateway at %q, want %q", c.Name, cs.GetName(), cs.GetGateway(), want.Gateway.Addr)
				}
			}
		}
		if len(resp.GetClusters()) != 3 || services != 6 {
			t.Errorf("%s sees %d clusters and %d services, want 3 and 6", c.Name, len(resp.GetClusters()), services)
		}
	}
	// Calls cross clusters through sidecars and gateways: order in east
	// reaches inventory and the barista VM in central, and payment in west
	// reaches the barista.
	order, err := saved.find("east", "order-1")
	if err != nil {
		t.Fatal(err)
	}
	payment, err := saved.find("west", "payment-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range []struct {
		from    WorkloadState
		service string
		cluster string
	}{{order, "inventory", "central"}, {order, "barista", "central"}, {payment, "barista", "central"}} {
		r, err := saved.Call(ctx, call.from, call.service)
		if err != nil || r.Cluster != call.cluster {
			t.Errorf("%s calling %s: %+v, %v; want an answer from %s", call.from.Name, call.service, r, err, call.cluster)
		}
	}

	// The scenario of 'federate lab verify' passes every step.
	var progress bytes.Buffer
	results, err := Verify(ctx, saved, &progress)
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, progress.String())
	}
	var table bytes.Buffer
	WriteTable(&table, results)
	t.Logf("lab verify:\n%s", table.String())
	for _, r := range results {
		if !r.OK {
			t.Errorf("step %q failed: %s", r.Step, r.Happened)
		}
	}

	// A second 'up' in the same directory is refused while the lab runs.
	if _, err := Up(ctx, Options{Dir: dir, Clusters: 3, Binary: bin, Out: &out}); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second lab up: err = %v, want 'already running'", err)
	}

	var downOut bytes.Buffer
	if err := Down(dir, &downOut); err != nil {
		t.Fatal(err)
	}
	for _, pid := range saved.processes() {
		if alive(pid) {
			t.Errorf("process %d still runs after down", pid)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab directory still exists after down: %v", err)
	}
	if isolate {
		for _, c := range saved.Clusters {
			if _, err := os.Stat("/var/run/netns/" + netnsName(c.Name)); !os.IsNotExist(err) {
				t.Errorf("network namespace %s still exists after down", netnsName(c.Name))
			}
		}
		if _, err := net.InterfaceByName(bridgeName); err == nil {
			t.Errorf("%s still exists after down", bridgeName)
		}
	}
}
