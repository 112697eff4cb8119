package workloads_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/controlplane/workloads"
	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
)

// An agent process bootstraps from the files 'federate vm configure'
// wrote, registers its WorkloadEntry, which every cluster sees; a failing
// probe makes it unhealthy everywhere; stopping the agent makes it
// unhealthy at once and removes it after the grace period. The token is
// good once: a second bootstrap with it is refused, but a restart with the
// saved SVID works.
func TestIntegrationVMAgentRegistersAndWithdraws(t *testing.T) {
	t.Parallel()
	buildBinaries()
	tm := fedtest.NewMesh(t, testTimers)
	const grace = 2 * time.Second
	central := startVMCluster(t, tm, "central", grace, time.Minute)
	east := tm.AddCluster("east").Member

	app := startProbedApp(t)
	dir := t.TempDir()
	federate, agentBin := binaries(t)
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
	cpPort := central.cp.Member().Addr()[strings.LastIndex(central.cp.Member().Addr(), ":"):]
	for _, f := range []string{"cluster.env", "mesh.yaml", "hosts"} {
		data, _ := os.ReadFile(filepath.Join(dir, f))
		if strings.Contains(string(data), cpPort) {
			t.Errorf("%s names the control plane's own port %s:\n%s", f, cpPort, data)
		}
	}
	env, _ := os.ReadFile(filepath.Join(dir, "cluster.env"))
	gwPort := central.vmGwAddr[strings.LastIndex(central.vmGwAddr, ":"):]
	if want := "CA_ADDR='controlplane.central.federate.internal" + gwPort + "'"; !strings.Contains(string(env), want) {
		t.Errorf("cluster.env lacks %s:\n%s", want, env)
	}
	if hosts, _ := os.ReadFile(filepath.Join(dir, "hosts")); string(hosts) != "127.0.0.1 controlplane.central.federate.internal\n" {
		t.Errorf("hosts = %q, want the control plane's name at the gateway's IP", hosts)
	}
	writeSidecar(t, dir, "inbound: {listen: 127.0.0.1:0}\n")
	if n := central.vmGateway.Stats().Relayed; n != 0 {
		t.Fatalf("the VMs' gateway relayed %d connections before the agent started", n)
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
		if registered.IsZero() && len(central.cp.Workloads().Entries()) == 1 {
			registered = now
		}
		if inCentral.IsZero() && baristaEndpoint(central.cp.Member(), "central") != nil {
			inCentral = now
		}
		if inEast.IsZero() && baristaEndpoint(east, "central") != nil {
			inEast = now
		}
	}
	poll.Stop()
	if d := inEast.Sub(registered); d > time.Second {
		t.Errorf("east listed the entry %s after it registered, want within 1s", d)
	}
	t.Logf("through the gateway: the entry was in central's registry %s and east's %s after it registered",
		inCentral.Sub(registered), inEast.Sub(registered))
	fedtest.Eventually(t, 15*time.Second, "the entry is healthy in central and east", func() bool {
		a, b := baristaEndpoint(central.cp.Member(), "central"), baristaEndpoint(east, "central")
		return a.GetHealth() == registrypb.Health_HEALTHY && b.GetHealth() == registrypb.Health_HEALTHY
	})
	// The token trade and the registration stream both crossed the gateway.
	if st := central.vmGateway.Stats(); st.Relayed < 2 || st.Refused[eastwest.RefusedUnknownSNI] > 0 {
		t.Errorf("the VMs' gateway stats %+v: want at least 2 relayed connections (bootstrap and registration), none refused", st)
	}
	entries := central.cp.Workloads().Entries()
	if len(entries) != 1 || entries[0].Name != "barista-127.0.0.1" || entries[0].Annotations[workloads.AutoRegistrationAnnotation] != "barista" {
		t.Fatalf("entries = %+v, want barista-127.0.0.1 owned by group barista", entries)
	}
	if ep := baristaEndpoint(east, "central"); ep.GetSpiffeId() != "spiffe://central.shop/ns/shop/sa/barista" {
		t.Errorf("endpoint identity %s", ep.GetSpiffeId())
	}

	// The probe fails: the entry is withdrawn from routing everywhere.
	app.Close()
	fedtest.Eventually(t, 10*time.Second, "east sees the entry unhealthy after the probe fails", func() bool {
		ep := baristaEndpoint(east, "central")
		return ep != nil && ep.GetHealth() == registrypb.Health_UNHEALTHY
	})

	// Stopped: unhealthy at once (it already is), then removed after the grace period.
	agent.stop()
	stopped := time.Now()
	fedtest.Eventually(t, 10*time.Second, "the entry is removed everywhere", func() bool {
		return baristaEndpoint(central.cp.Member(), "central") == nil && baristaEndpoint(east, "central") == nil
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
	fedtest.Eventually(t, 15*time.Second, "the restarted agent registers with its saved SVID", func() bool {
		return baristaEndpoint(east, "central") != nil
	})
	restarted.stop()
}

// Bad bootstrap input fails clearly and registers nothing.

// With short-lived tokens and SVIDs (seconds here, as minutes would be in
// production), the agent renews its SVID with the SVID itself, so it stays
// registered past the token's expiry and its first SVID's, and a restart
// after them still works.
func TestIntegrationVMAgentRenewsPastTokenExpiry(t *testing.T) {
	t.Parallel()
	buildBinaries()
	tm := fedtest.NewMesh(t, testTimers)
	const tokenTTL, svidTTL = 5 * time.Second, 4 * time.Second
	central := startVMCluster(t, tm, "central", time.Second, svidTTL)
	dir, state := t.TempDir(), t.TempDir()
	federate, agentBin := binaries(t)
	tokenExpiry := time.Now().Add(tokenTTL)
	group := strings.Replace(baristaGroup(1), "  probe:\n    periodSeconds: 1\n    failureThreshold: 1\n    tcpSocket: {port: 1}\n", "", 1)
	if out, err := central.configure(t, tm, federate, group, dir, tokenTTL); err != nil {
		t.Fatalf("vm configure: %v\n%s", err, out)
	}
	writeSidecar(t, dir, "inbound: {listen: 127.0.0.1:0}\n")
	agent := startAgent(t, agentBin, dir, state)
	connected := func() bool {
		e := central.cp.Workloads().Entries()
		return len(e) == 1 && e[0].Connected && e[0].Healthy
	}
	fedtest.Eventually(t, 15*time.Second, "the agent registers", connected)
	first, err := trust.LoadCredential(filepath.Join(state, "svid.pem"))
	if err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 30*time.Second, "the token and the first SVID expire while the agent runs", func() bool {
		return time.Now().After(tokenExpiry.Add(2*time.Second)) && time.Now().After(first.Expiry())
	})
	if !connected() {
		t.Fatalf("the agent is no longer registered after the token expired:\n%s", agent.out)
	}
	// A renewal may come late on a busy machine: the saved SVID must be a
	// later, valid one within one more SVID lifetime.
	fedtest.Eventually(t, 5*time.Second, "the saved SVID is renewed and valid", func() bool {
		c, err := trust.LoadCredential(filepath.Join(state, "svid.pem"))
		if err != nil {
			return false
		}
		return c.Leaf().NotAfter.After(first.Leaf().NotAfter) && time.Now().Before(c.Expiry())
	})
	agent.stop()
	startAgent(t, agentBin, dir, state)
	fedtest.Eventually(t, 15*time.Second, "the agent restarts after the token expired", connected)
}
