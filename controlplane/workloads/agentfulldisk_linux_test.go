package workloads_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/tmpfs"
)

// An agent whose state directory is on a full disk (a real, small tmpfs)
// at its first start has used its one-time token by the time it finds it
// cannot save the SVID: it runs on the SVID it holds, saves it once there
// is space, and starts again from it without a new token.
func TestIntegrationAgentFirstStartOnAFullDisk(t *testing.T) {
	t.Parallel()
	central, dir, agentBin := configuredBaristaVM(t)
	state := t.TempDir()
	tmpfs.Mount(t, state, 1<<20)
	filler := tmpfs.Fill(t, state)

	connected := func() bool {
		es := central.cp.Workloads().Entries()
		return len(es) == 1 && es[0].Connected
	}
	first := startAgent(t, agentBin, dir, state)
	fedtest.Eventually(t, 20*time.Second, "the agent registers while its disk is full", func() bool {
		select {
		case <-first.done:
			t.Fatalf("the agent exited on a full disk, its token spent:\n%s", first.out)
		default:
		}
		return connected()
	})

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	svid := filepath.Join(state, agent.SVIDFile)
	fedtest.Eventually(t, 20*time.Second, "the SVID saved once there is space", func() bool {
		_, err := os.Stat(svid)
		return err == nil
	})
	first.stop()
	fedtest.Eventually(t, 20*time.Second, "the control plane to see the agent go", func() bool { return !connected() })

	again := startAgent(t, agentBin, dir, state)
	fedtest.Eventually(t, 20*time.Second, "the agent starts again from its saved SVID", func() bool {
		select {
		case <-again.done:
			t.Fatalf("the agent did not start again:\n%s", again.out)
		default:
		}
		return connected()
	})
}

// An agent whose saved SVID no longer loads (cut short by a disk fault)
// falls back to its token, which is spent: the error it stops with names
// the saved SVID and why it did not load, not only the token.
func TestIntegrationAgentDamagedSavedSVID(t *testing.T) {
	t.Parallel()
	central, dir, agentBin := configuredBaristaVM(t)
	state := t.TempDir()
	first := startAgent(t, agentBin, dir, state)
	fedtest.Eventually(t, 20*time.Second, "the agent registers", func() bool {
		es := central.cp.Workloads().Entries()
		return len(es) == 1 && es[0].Connected
	})
	first.stop()

	svid := filepath.Join(state, agent.SVIDFile)
	data, err := os.ReadFile(svid)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(svid, data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	out := startAgent(t, agentBin, dir, state).exitError(t)
	if !strings.Contains(out, svid) {
		t.Errorf("the agent stopped without naming its saved SVID %s:\n%s", svid, out)
	}
}

// configuredBaristaVM starts cluster central with a probed barista
// application and writes a barista VM's bootstrap files and sidecar: it
// returns central, the VM's config directory and the agent binary.
func configuredBaristaVM(t *testing.T) (central *vmCluster, dir, agentBin string) {
	t.Helper()
	buildBinaries()
	tm := fedtest.NewMesh(t, testTimers)
	central = startVMCluster(t, tm, "central", 3*time.Second, time.Minute)
	app := startProbedApp(t)
	dir = t.TempDir()
	federate, agentBin := binaries(t)
	if out, err := central.configure(t, tm, federate, baristaGroup(app.Addr().(*net.TCPAddr).Port), dir, time.Minute); err != nil {
		t.Fatalf("vm configure: %v\n%s", err, out)
	}
	writeSidecar(t, dir, "inbound: {listen: 127.0.0.1:0}\n")
	return central, dir, agentBin
}
