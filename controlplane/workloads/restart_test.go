package workloads_test

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/registry/registrypb"
)

// A control plane restart, as a rolling update makes, loses no VM: while
// it stops and starts again, the other clusters go on seeing the VM's
// entry healthy, the restarted member imports what the VM's agent calls
// from its start, and the agent reconnects. An entry whose agent does not
// come back goes after the grace period, counted from the restart.
func TestIntegrationVMEntriesSurviveControlPlaneRestart(t *testing.T) {
	t.Parallel()
	buildBinaries()
	tm := fedtest.NewMesh(t, testTimers)
	const (
		grace   = 3 * time.Second
		imports = "inventory.shop.svc.cluster.local" // what the cluster imports itself
		called  = "payment.shop.svc.cluster.local"   // what the VM calls
	)
	central := startVMCluster(t, tm, "central", grace, time.Minute, func(c *controlplane.Config) { c.Imports = []string{imports} })
	east := tm.AddCluster("east").Member

	app := startProbedApp(t)
	dir := t.TempDir()
	federate, agentBin := binaries(t)
	if out, err := central.configure(t, tm, federate, baristaGroup(app.Addr().(*net.TCPAddr).Port), dir, time.Minute); err != nil {
		t.Fatalf("vm configure: %v\n%s", err, out)
	}
	writeSidecar(t, dir, "inbound: {listen: 127.0.0.1:0}\noutbound:\n- {host: "+called+", port: 8081, listen: \"127.0.0.1:0\"}\n")
	agent := startAgent(t, agentBin, dir, t.TempDir())
	healthyInEast := func() bool { return baristaEndpoint(east, "central").GetHealth() == registrypb.Health_HEALTHY }
	fedtest.Eventually(t, 15*time.Second, "east sees the VM healthy", healthyInEast)
	fedtest.Eventually(t, 5*time.Second, "central imports what the VM calls", func() bool {
		return central.cp.Member().Imports().Includes(called)
	})

	// East's view, polled finely through the restart.
	var mu sync.Mutex
	var lapses []time.Duration
	start := time.Now()
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if !healthyInEast() {
				mu.Lock()
				lapses = append(lapses, time.Since(start))
				mu.Unlock()
			}
		}
	}()
	central.restart(tm, nil)
	restarted := time.Since(start)
	if !central.cp.Member().Imports().Includes(called) {
		t.Errorf("the restarted member imports %v, without %s, which the VM calls", central.cp.Member().Imports().List(), called)
	}
	fedtest.Eventually(t, 15*time.Second, "the agent reconnects to the restarted control plane", func() bool {
		es := central.cp.Workloads().Entries()
		return len(es) == 1 && es[0].Connected && es[0].Healthy
	})
	time.Sleep(500 * time.Millisecond) // what the reconnection publishes
	close(done)
	<-watched
	t.Logf("stop and start took %s; the agent reconnected %s after the start", restarted.Round(time.Millisecond), (time.Since(start) - restarted - 500*time.Millisecond).Round(time.Millisecond))
	if len(lapses) > 0 {
		t.Errorf("east saw the VM gone or unhealthy %d times, from %s to %s after the restart began", len(lapses), lapses[0], lapses[len(lapses)-1])
	}

	// The agent dies while the control plane is down: its entry, restored
	// healthy, goes after the grace period.
	central.restart(tm, agent.kill)
	back := time.Now()
	if !healthyInEast() {
		t.Errorf("east does not see the restored entry healthy")
	}
	fedtest.Eventually(t, 10*time.Second, "the entry whose agent died is removed everywhere", func() bool {
		return baristaEndpoint(central.cp.Member(), "central") == nil && baristaEndpoint(east, "central") == nil
	})
	if d := time.Since(back); d < grace {
		t.Errorf("the entry was removed %s after the restart, before the %s grace period", d, grace)
	}
}
