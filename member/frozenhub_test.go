package member_test

import (
	"testing"
	"time"

	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/registry"
)

// Timing of the frozen-hub test: how long the hub stays frozen, how often
// the owner changes its services meanwhile, and how soon each change must
// be everywhere.
const (
	hubFrozenFor     = 30 * time.Second
	changeEvery      = 3 * time.Second
	changeReachedIn  = 2 * time.Second
	changeWaitAtMost = 5 * time.Second // past the bound, to log what it took
)

// TestIntegrationFrozenHubGossipKeepsSpreading freezes the hub, a process
// of its own, with SIGSTOP: it keeps its sockets, so dials to it connect
// and then hang, unlike a hub that is down. Peers must go on spreading
// every change among themselves by gossip, each within 2 s, for as long
// as it is frozen; and once it resumes the hub catches up.
//
// Not parallel: it measures latencies against a 2 s bound, and the
// package's parallel integration tests, in this same process, starved its
// members for seconds (an Update took 1 s to apply).
func TestIntegrationFrozenHubGossipKeepsSpreading(t *testing.T) {
	bin := fedtest.BuildFederate(t)
	tm, hub := fedtest.NewMeshWithHubProcess(t, testTimers, bin)
	owner := tm.AddCluster("east")
	owner.Update(t, fedtest.CoffeeService("east", "order", 1, 18080))
	var peers []*fedtest.Member
	for _, name := range []string{"west", "central", "north"} {
		m := tm.AddCluster(name)
		m.Update(t, fedtest.CoffeeService(name, "payment", 1, 18081))
		peers = append(peers, m)
	}
	for _, c := range []string{"east", "west", "central", "north"} {
		fedtest.Eventually(t, 15*time.Second, c+" converged", func() bool { return tm.Converged(c) })
	}

	if err := hub.Freeze(); err != nil {
		t.Fatal(err)
	}
	frozenAt := time.Now()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := hub.Resume(); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(resume)

	var worst time.Duration
	change := 0
	for next := frozenAt; time.Since(frozenAt) < hubFrozenFor; next = next.Add(changeEvery) {
		waitUntil(t, next)
		change++
		madeAt := time.Now()
		owner.Update(t, fedtest.CoffeeService("east", "order", 1+change%4, 18080+uint32(change)))
		applied := time.Since(madeAt)
		want := owner.Member.Version("east")
		for name, took := range reachedAfter(t, peers, "east", want, madeAt) {
			worst = max(worst, took)
			t.Logf("change %d (at +%s, applied by its owner in %s) reached %s in %s", change, madeAt.Sub(frozenAt).Round(time.Millisecond),
				applied.Round(time.Millisecond), name, took.Round(time.Millisecond))
			if took > changeReachedIn {
				t.Errorf("change %d made %s after the hub froze reached %s after %s, want within %s",
					change, madeAt.Sub(frozenAt).Round(time.Millisecond), name, took.Round(time.Millisecond), changeReachedIn)
			}
		}
	}
	t.Logf("hub frozen for %s: %d changes, worst latency to a peer %s", time.Since(frozenAt).Round(time.Millisecond), change, worst.Round(time.Millisecond))
	if change < int(hubFrozenFor/changeEvery) {
		t.Fatalf("made %d changes while the hub was frozen, want %d", change, hubFrozenFor/changeEvery)
	}

	// The hub, resumed, learns the owner's latest version.
	resume()
	want := owner.Member.Version("east")
	fedtest.Eventually(t, 15*time.Second, "the resumed hub holding east's latest version", func() bool {
		return registry.Compare(hubSlices(t, tm.AdminRegistry())["east"], want) == 0
	})
}

// waitUntil waits for the clock to pass at.
func waitUntil(t *testing.T, at time.Time) {
	t.Helper()
	timer := time.NewTimer(time.Until(at))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-t.Context().Done():
		t.Fatal("test ended while waiting")
	}
}

// reachedAfter waits until every peer holds want of cluster's slice and
// returns how long after since each got it; it fails the test after
// changeWaitAtMost.
func reachedAfter(t *testing.T, peers []*fedtest.Member, cluster string, want *registry.Version, since time.Time) map[string]time.Duration {
	t.Helper()
	deadline := time.NewTimer(time.Until(since.Add(changeWaitAtMost)))
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	took := make(map[string]time.Duration)
	for {
		for _, p := range peers {
			if _, ok := took[p.Name]; !ok && registry.Compare(p.Member.Version(cluster), want) >= 0 {
				took[p.Name] = time.Since(since)
			}
		}
		if len(took) == len(peers) {
			return took
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("not every peer got %s's version %s within %s; those that did: %v", cluster, registry.FormatVersion(want), changeWaitAtMost, took)
		}
	}
}
