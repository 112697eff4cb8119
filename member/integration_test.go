package member_test

import (
	"context"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

var testTimers = Timers{StaleAfter: 3 * time.Second, DeadAfter: 5 * time.Second, ExpireAfter: 8 * time.Second}

// hasVersion reports whether every member other than the owner holds the
// owner's current version.
func (tm *testMesh) converged(owner string) bool {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	want := tm.members[owner].member.Version(owner)
	for name, m := range tm.members {
		if name == owner || m.stop == nil {
			continue
		}
		if registry.Compare(m.member.Version(owner), want) != 0 {
			return false
		}
	}
	return true
}

func endpointsOf(m *Member, cluster, service string) []*registry.Endpoint {
	for _, s := range m.Services(cluster) {
		if s.GetName() == service {
			return s.GetEndpoints()
		}
	}
	return nil
}

func startCoffeeShop(t *testing.T) *testMesh {
	tm := newTestMesh(t, testTimers)
	tm.addCluster("east").update(t, coffeeService("east", "order", 2, 18080))
	tm.addCluster("west").update(t, coffeeService("west", "payment", 2, 18081))
	tm.addCluster("central").update(t, coffeeService("central", "inventory", 1, 18082), coffeeService("central", "payment", 1, 18083))
	for _, c := range []string{"east", "west", "central"} {
		eventually(t, 10*time.Second, c+" converged", func() bool { return tm.converged(c) })
	}
	return tm
}

func TestIntegrationConvergeAndPropagate(t *testing.T) {
	tm := startCoffeeShop(t)
	west := tm.members["west"].member
	if got := len(endpointsOf(west, "east", "order")); got != 2 {
		t.Fatalf("west sees %d endpoints of east/order, want 2", got)
	}
	// A change in one cluster reaches every other.
	tm.members["east"].update(t, coffeeService("east", "order", 5, 18080))
	eventually(t, 5*time.Second, "east's change everywhere", func() bool {
		return len(endpointsOf(west, "east", "order")) == 5 && len(endpointsOf(tm.members["central"].member, "east", "order")) == 5
	})
	// A withdrawn service disappears everywhere.
	tm.members["central"].update(t, coffeeService("central", "inventory", 1, 18082))
	eventually(t, 5*time.Second, "central/payment withdrawn", func() bool {
		return endpointsOf(west, "central", "payment") == nil && endpointsOf(tm.members["east"].member, "central", "payment") == nil
	})
	// The hub holds every slice.
	st, err := tm.adminRegistry().Status(context.Background(), &hubpb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetClusters()) != 3 {
		t.Fatalf("hub status lists %d clusters, want 3", len(st.GetClusters()))
	}
}

func TestIntegrationHubDownPeerToPeer(t *testing.T) {
	tm := startCoffeeShop(t)
	tm.stopHub()
	tm.members["east"].update(t, coffeeService("east", "order", 3, 18080))
	eventually(t, 10*time.Second, "east's change by gossip and peer fetch", func() bool { return tm.converged("east") })
	if got := len(endpointsOf(tm.members["central"].member, "east", "order")); got != 3 {
		t.Fatalf("central sees %d endpoints, want 3", got)
	}

	// The hub restarts from its bbolt file with every slice, and catches up
	// with the change it missed.
	tm.startHub()
	before := tm.hub.set.Versions()
	for _, c := range []string{"west", "central"} {
		if before[c] == nil {
			t.Fatalf("restarted hub lost the slice of %s", c)
		}
	}
	want := tm.members["east"].member.Version("east")
	eventually(t, 10*time.Second, "hub resynced east", func() bool {
		return registry.Compare(tm.hub.set.Version("east"), want) == 0
	})
}

func TestIntegrationRestartServesLastKnownState(t *testing.T) {
	tm := startCoffeeShop(t)
	tm.stopHub()
	tm.stopMember("west")
	m := tm.startMember("west").member
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

func TestIntegrationStoppedClusterGoesStaleThenDead(t *testing.T) {
	tm := startCoffeeShop(t)
	east := tm.members["east"].member
	tm.stopMember("central")
	seen := map[string]bool{}
	eventually(t, 15*time.Second, "central dead", func() bool {
		for _, c := range east.StatusNow().GetClusters() {
			if c.GetName() == "central" {
				seen[c.GetState()] = true
				if c.GetState() == StateStale || c.GetState() == StateDead {
					for _, ep := range endpointsOf(east, "central", "inventory") {
						if ep.GetHealth() != registrypb.Health_UNHEALTHY {
							t.Errorf("central is %s but an endpoint is %v", c.GetState(), ep.GetHealth())
						}
					}
					if c.GetUnhealthyEndpoints() != c.GetEndpoints() {
						t.Errorf("status of %s central: %d of %d endpoints unhealthy", c.GetState(), c.GetUnhealthyEndpoints(), c.GetEndpoints())
					}
				}
				return c.GetState() == StateDead
			}
		}
		return false
	})
	for _, st := range []string{StateSuspect, StateStale, StateDead} {
		if !seen[st] {
			t.Errorf("central never went %s; saw %v", st, seen)
		}
	}
	// West agrees, and after expire_after the slice is gone everywhere.
	eventually(t, 15*time.Second, "central expired", func() bool {
		for _, name := range []string{"east", "west"} {
			for _, c := range tm.members[name].member.Clusters() {
				if c == "central" {
					return false
				}
			}
		}
		return true
	})
}
