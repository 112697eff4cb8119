package workloads_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/internal/fedtest"
)

// Bad bootstrap input fails clearly and registers nothing.
func TestIntegrationVMAgentBadInput(t *testing.T) {
	t.Parallel()
	buildBinaries()
	tm := fedtest.NewMesh(t, testTimers)
	central := startVMCluster(t, tm, "central", time.Second, time.Minute)
	federate, agentBin := binaries(t)

	fresh := func(ttl time.Duration) string {
		dir := t.TempDir()
		out, err := central.configure(t, tm, federate, baristaGroup(1), dir, ttl)
		if err != nil {
			t.Fatalf("vm configure: %v\n%s", err, out)
		}
		writeSidecar(t, dir, "inbound: {listen: 127.0.0.1:0}\n")
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
		if n := len(central.cp.Workloads().Entries()); n != 0 {
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
	otherMesh := fedtest.NewMesh(t, testTimers)
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
	fedtest.Eventually(t, 15*time.Second, "the first agent registers", func() bool { return len(central.cp.Workloads().Entries()) == 1 })
	good.stop()
	fedtest.Eventually(t, 10*time.Second, "its entry is removed", func() bool { return len(central.cp.Workloads().Entries()) == 0 })
	expectFailure("reused token", dir, "already used")

	// An expired token.
	dir = fresh(time.Second)
	configured := time.Now() // the token expires at most a second after it was made
	fedtest.Eventually(t, 5*time.Second, "the token expires", func() bool { return time.Now().After(configured.Add(time.Second)) })
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
