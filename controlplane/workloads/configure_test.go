package workloads_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
)

// 'vm configure --cluster west' given central's control plane refuses it
// in the handshake and writes nothing, instead of bootstrap files that mix
// west's name with central's network, trust domain and control plane.
func TestIntegrationVMConfigureRefusesAnotherClustersControlPlane(t *testing.T) {
	t.Parallel()
	buildBinaries()
	tm := fedtest.NewMesh(t, testTimers)
	central := startVMCluster(t, tm, "central", time.Second, time.Minute)
	startVMCluster(t, tm, "west", time.Second, time.Minute)
	federate, _ := binaries(t)

	wg := filepath.Join(t.TempDir(), "wg.yaml")
	if err := os.WriteFile(wg, []byte(baristaGroup(1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "vm")
	cmd := exec.Command(federate, "vm", "configure", "-f", wg, "--cluster", "west", "-o", out,
		"--control-plane", central.cp.Member().Addr(), "--credential", filepath.Join(tm.Dir, "hub", hub.AdminCredFile))
	got, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("vm configure --cluster west with central's control plane succeeded:\n%s", got)
	}
	if want := `not as the control plane of cluster "west"`; !strings.Contains(string(got), want) || !strings.Contains(string(got), "cluster/central") {
		t.Errorf("vm configure with another cluster's control plane: %s\nwant it to name central and %q", got, want)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("vm configure wrote %s anyway (%v)", out, err)
	}
}
