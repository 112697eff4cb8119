package lab

import (
	"bytes"
	"context"
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
func TestIntegrationLab(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs processes")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "federate")
	build := exec.Command("go", "build", "-o", bin, "github.com/federate/federate/cmd/federate")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dir := filepath.Join(tmp, "lab")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	st, err := Up(ctx, Options{Dir: dir, Clusters: 3, Binary: bin, Out: &out})
	if err != nil {
		t.Fatalf("lab up: %v\n%s", err, out.String())
	}
	t.Cleanup(func() { st.stop() })
	if !strings.Contains(out.String(), "[4/4] waiting until every cluster sees every other... done") {
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
		if len(resp.GetClusters()) != 3 || services != 4 {
			t.Errorf("%s sees %d clusters and %d services, want 3 and 4", c.Name, len(resp.GetClusters()), services)
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
}
