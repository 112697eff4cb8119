package fedtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/testport"
)

// HubProcess is a hub run as its own process of the federate binary, so
// that a test can freeze it (SIGSTOP), as an operator's stuck host would.
type HubProcess struct {
	cmd *exec.Cmd
	Log string // its log file
}

// BuildFederate builds the federate CLI into a directory of the test and
// returns its path.
func BuildFederate(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "federate")
	// Without symbol table and DWARF, which the test does not need, the
	// link is faster.
	cmd := exec.Command("go", "build", "-ldflags=-s -w", "-o", bin, "github.com/federate/federate/cmd/federate")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/federate: %v\n%s", err, out)
	}
	return bin
}

// NewMeshWithHubProcess is NewMesh with the hub run by 'federate hub' from
// bin instead of in this process; Mesh.Hub stays nil. The test's cleanup
// resumes and kills the hub, after it stopped the members.
func NewMeshWithHubProcess(t testing.TB, timers gossip.Timers, bin string) (*Mesh, *HubProcess) {
	t.Helper()
	tm := newMesh(t, timers)
	tm.HubAddr, tm.HubGossip = testport.Addr(t), testport.Addr(t)
	hp := startHubProcess(t, bin, tm)
	tm.hubStop = hp.Stop
	// Registered after the hub's: runs first, while the hub still runs.
	t.Cleanup(tm.StopMembers)
	return tm, hp
}

func startHubProcess(t testing.TB, bin string, tm *Mesh) *HubProcess {
	t.Helper()
	hp := &HubProcess{Log: filepath.Join(t.TempDir(), "hub.log")}
	logFile, err := os.Create(hp.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	hp.cmd = exec.Command(bin, "hub", "--mesh", "shop", "--data-dir", filepath.Join(tm.Dir, "hub"),
		"--listen", tm.HubAddr, "--gossip", tm.HubGossip, "--gossip-profile", "lan",
		"--stale-after", tm.timers.StaleAfter.String(), "--dead-after", tm.timers.DeadAfter.String(),
		"--expire-after", tm.timers.ExpireAfter.String(), "--log-level", "info", "--metrics-listen", "127.0.0.1:0")
	hp.cmd.Stdout, hp.cmd.Stderr = logFile, logFile
	if err := hp.cmd.Start(); err != nil {
		t.Fatalf("start the hub: %v", err)
	}
	t.Cleanup(func() {
		hp.Stop()
		if t.Failed() {
			t.Logf("hub log (%s):\n%s", hp.Log, hp.tail())
		}
	})
	admin := filepath.Join(tm.Dir, "hub", hub.AdminCredFile)
	Eventually(t, 30*time.Second, "the hub process to write its admin credential", func() bool {
		_, err := os.Stat(admin)
		return err == nil
	})
	registry := tm.AdminRegistry()
	EventuallyNil(t, 30*time.Second, "the hub process to answer", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := registry.Status(ctx, &hubpb.StatusRequest{})
		return err
	})
	return hp
}

// Freeze stops the hub with SIGSTOP: it holds its sockets but answers
// nothing until Resume.
func (hp *HubProcess) Freeze() error { return hp.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a frozen hub.
func (hp *HubProcess) Resume() error { return hp.cmd.Process.Signal(syscall.SIGCONT) }

// Stop resumes the hub if frozen, kills it and waits for it; it may be
// called more than once.
func (hp *HubProcess) Stop() {
	if hp.cmd.ProcessState != nil {
		return
	}
	_ = hp.cmd.Process.Signal(syscall.SIGCONT)
	_ = hp.cmd.Process.Kill()
	_ = hp.cmd.Wait()
}

// tail returns the last lines of the hub's log.
func (hp *HubProcess) tail() string {
	data, _ := os.ReadFile(hp.Log)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}
