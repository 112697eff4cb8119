package member_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

var testTimers = gossip.Timers{StaleAfter: 3 * time.Second, DeadAfter: 5 * time.Second, ExpireAfter: 8 * time.Second}

// skipClock is the real clock plus what a test skipped ahead: members
// given its Now reach the liveness timers without waiting for them.
type skipClock struct{ skipped atomic.Int64 }

func (c *skipClock) Now() time.Time { return time.Now().Add(time.Duration(c.skipped.Load())) }

// skipUnconfirmed skips the clock ahead until cluster has gone unconfirmed
// for d in m's view. It does nothing while m sees the cluster alive: a
// cluster that gossip confirms again starts over.
func (c *skipClock) skipUnconfirmed(m *member.Member, cluster string, d time.Duration) {
	for _, cs := range m.StatusNow().GetClusters() {
		if cs.GetName() != cluster || cs.GetState() == gossip.StateAlive {
			continue
		}
		if idle := c.Now().Sub(time.UnixMilli(cs.GetLastSeen())); idle < d {
			c.skipped.Add(int64(d - idle))
		}
	}
}

// newMesh is fedtest.NewMesh with members that stop all at once when the
// test ends.
func newMesh(t *testing.T, timers gossip.Timers) *fedtest.Mesh {
	t.Helper()
	tm := fedtest.NewMesh(t, timers)
	t.Cleanup(tm.StopMembers)
	return tm
}

func endpointsOf(m *member.Member, cluster, service string) []*registry.Endpoint {
	for _, s := range m.Services(cluster) {
		if s.GetName() == service {
			return s.GetEndpoints()
		}
	}
	return nil
}

// hubSlices returns the slice versions the hub holds, by cluster.
func hubSlices(t *testing.T, reg hubpb.RegistryClient) map[string]*registry.Version {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := reg.Status(ctx, &hubpb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]*registry.Version)
	for _, c := range st.GetClusters() {
		out[c.GetName()] = c.GetSliceVersion()
	}
	return out
}

// startCoffeeShop starts east, west and central with their services and
// waits until every member holds every slice; configure, if set, adjusts
// each member's config.
func startCoffeeShop(t *testing.T, configure func(*member.Config)) *fedtest.Mesh {
	t.Helper()
	tm := newMesh(t, testTimers)
	start := func(name string) *fedtest.Member {
		tm.Join(name)
		return tm.StartMemberWith(name, configure)
	}
	start("east").Update(t, fedtest.CoffeeService("east", "order", 2, 18080))
	start("west").Update(t, fedtest.CoffeeService("west", "payment", 2, 18081))
	start("central").Update(t, fedtest.CoffeeService("central", "inventory", 1, 18082), fedtest.CoffeeService("central", "payment", 1, 18083))
	for _, c := range []string{"east", "west", "central"} {
		fedtest.Eventually(t, 10*time.Second, c+" converged", func() bool { return tm.Converged(c) })
	}
	return tm
}

func TestIntegrationConvergeAndPropagate(t *testing.T) {
	t.Parallel()
	tm := startCoffeeShop(t, nil)
	west := tm.Member("west").Member
	if got := len(endpointsOf(west, "east", "order")); got != 2 {
		t.Fatalf("west sees %d endpoints of east/order, want 2", got)
	}
	// A change in one cluster reaches every other.
	tm.Member("east").Update(t, fedtest.CoffeeService("east", "order", 5, 18080))
	fedtest.Eventually(t, 5*time.Second, "east's change everywhere", func() bool {
		return len(endpointsOf(west, "east", "order")) == 5 && len(endpointsOf(tm.Member("central").Member, "east", "order")) == 5
	})
	// A withdrawn service disappears everywhere.
	tm.Member("central").Update(t, fedtest.CoffeeService("central", "inventory", 1, 18082))
	fedtest.Eventually(t, 5*time.Second, "central/payment withdrawn", func() bool {
		return endpointsOf(west, "central", "payment") == nil && endpointsOf(tm.Member("east").Member, "central", "payment") == nil
	})
	// The hub holds every slice.
	st, err := tm.AdminRegistry().Status(t.Context(), &hubpb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetClusters()) != 3 {
		t.Fatalf("hub status lists %d clusters, want 3", len(st.GetClusters()))
	}
}

func TestIntegrationHubDownPeerToPeer(t *testing.T) {
	t.Parallel()
	tm := startCoffeeShop(t, nil)
	tm.StopHub()
	tm.Member("east").Update(t, fedtest.CoffeeService("east", "order", 3, 18080))
	fedtest.Eventually(t, 10*time.Second, "east's change by gossip and peer fetch", func() bool { return tm.Converged("east") })
	if got := len(endpointsOf(tm.Member("central").Member, "east", "order")); got != 3 {
		t.Fatalf("central sees %d endpoints, want 3", got)
	}

	// The hub restarts from its bbolt file with every slice, and catches up
	// with the change it missed.
	tm.StartHub()
	reg := tm.AdminRegistry()
	before := hubSlices(t, reg)
	for _, c := range []string{"west", "central"} {
		if before[c] == nil {
			t.Fatalf("restarted hub lost the slice of %s", c)
		}
	}
	want := tm.Member("east").Member.Version("east")
	fedtest.Eventually(t, 10*time.Second, "hub resynced east", func() bool {
		return registry.Compare(hubSlices(t, reg)["east"], want) == 0
	})
}

func TestIntegrationRestartServesLastKnownState(t *testing.T) {
	t.Parallel()
	tm := startCoffeeShop(t, nil)
	tm.StopHub()
	tm.StopMember("west")
	m := tm.StartMember("west").Member
	// Ready means serving: the remote state is there before any reconnect.
	if got := len(endpointsOf(m, "east", "order")); got != 2 {
		t.Fatalf("restarted west serves %d endpoints of east/order, want 2", got)
	}
	st := m.StatusNow()
	if len(st.GetClusters()) != 3 {
		t.Fatalf("restarted west knows %d clusters, want 3", len(st.GetClusters()))
	}
	// And its slice continues the same incarnation.
	if v := m.Version("west"); v.GetCounter() == 0 {
		t.Fatalf("west lost its own version: %v", v)
	}
}

// A stopped cluster goes suspect, stale (every endpoint unhealthy), dead,
// and after expire_after its slice is gone everywhere. The members' clock
// skips ahead to each timer rather than waiting for it.
func TestIntegrationStoppedClusterGoesStaleThenDead(t *testing.T) {
	t.Parallel()
	clock := new(skipClock)
	tm := startCoffeeShop(t, func(c *member.Config) { c.Now = clock.Now })
	east := tm.Member("east").Member
	tm.StopMember("central")
	seen := map[string]bool{}
	// reach polls east's view of central until it is in state want, the
	// clock skipping to after unconfirmed each time.
	reach := func(want string, after time.Duration) {
		t.Helper()
		fedtest.Eventually(t, 10*time.Second, "central "+want, func() bool {
			clock.skipUnconfirmed(east, "central", after)
			for _, c := range east.StatusNow().GetClusters() {
				if c.GetName() == "central" {
					seen[c.GetState()] = true
					if c.GetState() == gossip.StateStale || c.GetState() == gossip.StateDead {
						for _, ep := range endpointsOf(east, "central", "inventory") {
							if ep.GetHealth() != registrypb.Health_UNHEALTHY {
								t.Errorf("central is %s but an endpoint is %v", c.GetState(), ep.GetHealth())
							}
						}
						if c.GetUnhealthyEndpoints() != c.GetEndpoints() {
							t.Errorf("status of %s central: %d of %d endpoints unhealthy", c.GetState(), c.GetUnhealthyEndpoints(), c.GetEndpoints())
						}
					}
					return c.GetState() == want
				}
			}
			return false
		})
	}
	reach(gossip.StateSuspect, 0)
	reach(gossip.StateStale, testTimers.StaleAfter)
	reach(gossip.StateDead, testTimers.DeadAfter)
	for _, st := range []string{gossip.StateSuspect, gossip.StateStale, gossip.StateDead} {
		if !seen[st] {
			t.Errorf("central never went %s; saw %v", st, seen)
		}
	}
	// West agrees, and after expire_after the slice is gone everywhere.
	fedtest.Eventually(t, 10*time.Second, "central expired", func() bool {
		for _, name := range []string{"east", "west"} {
			m := tm.Member(name).Member
			clock.skipUnconfirmed(m, "central", testTimers.ExpireAfter)
			if slices.Contains(m.Clusters(), "central") {
				return false
			}
		}
		return true
	})
}
