package hub_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
)

// hubStatePoll is how often the test samples a member's hub stream.
const hubStatePoll = 5 * time.Millisecond

// Tokens and memberships name every replica and gossip seeds include
// every replica. When the replica that two members stream from dies under
// a stream of changes, both move to another within 1 s, and the
// subscriber ends with exactly the publisher's slice.
func TestHAMemberFailsOverWhenItsReplicaDies(t *testing.T) {
	h := newHAMesh(t, 3)
	east := h.AddCluster("east")
	west := h.AddCluster("west")
	ms, err := membership.LoadMembership(h.Dir + "/west")
	if err != nil {
		t.Fatal(err)
	}
	if got := membership.HubAddrs(ms.Hub); len(got) != 3 || got[0] != h.Addr(0) {
		t.Fatalf("west's membership names hubs %v, want the 3 replicas, the one that made its token first", got)
	}
	for i, r := range h.Replicas {
		if !slices.Contains(ms.GossipSeeds, r.GossipAddr()) {
			t.Errorf("west's gossip seeds %v lack replica %d's %s", ms.GossipSeeds, i, r.GossipAddr())
		}
	}
	fedtest.Eventually(t, 10*time.Second, "west streams from the hub", west.Member.HubStreamSynced)

	// A stream of changes from east.
	ctx, stopChanges := context.WithCancel(fedtest.DeadlineContext(t, 2*time.Minute))
	var published atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for n := 1; ctx.Err() == nil; n++ {
			if east.Member.Update(ctx, fedtest.ClusterInfo("east"), services("east", 1+n%8)) == nil {
				published.Add(1)
			}
		}
	})
	fedtest.Eventually(t, 10*time.Second, "east publishes", func() bool { return published.Load() > 20 })

	// Sample west's stream while replica 0, which it streams from, dies.
	// West has moved once a surviving replica holds its stream and it is
	// synced: a member registers a new stream only after it let go of
	// the old one. A sampler starved of CPU may never see the gap; the
	// outage then counts from the kill.
	var outage time.Duration
	sampled := make(chan struct{})
	sampleCtx, stopSampling := context.WithCancel(ctx)
	killed := time.Now()
	go func() {
		defer close(sampled)
		var lost time.Time
		tick := time.NewTicker(hubStatePoll)
		defer tick.Stop()
		for {
			select {
			case <-sampleCtx.Done():
				return
			case <-tick.C:
			}
			synced := west.Member.HubStreamSynced()
			if !synced && lost.IsZero() {
				lost = time.Now()
			}
			moved := h.Replicas[1].SubscribersOf("west")+h.Replicas[2].SubscribersOf("west") > 0
			if synced && moved {
				if lost.IsZero() {
					lost = killed
				}
				outage = time.Since(lost)
				return
			}
		}
	}()
	before := published.Load()
	h.StopReplica(0)
	select {
	case <-sampled:
	case <-time.After(30 * time.Second):
		t.Fatal("west did not stream from another replica within 30 s")
	}
	stopSampling()
	t.Logf("west's stream moved to another replica in %s (sampled every %s)", outage, hubStatePoll)
	if bound := raceSlowdown * time.Second; outage == 0 || outage > bound {
		t.Errorf("west was without a hub stream for %s, want (0, %s]", outage, bound)
	}
	fedtest.Eventually(t, 20*time.Second, "east keeps publishing through another replica", func() bool { return published.Load() > before+20 })
	stopChanges()
	wg.Wait()

	// West ends with east's last slice, as the surviving replicas hold it.
	fedtest.Eventually(t, 20*time.Second, "west and the surviving replicas hold east's last version", func() bool {
		want := east.Member.Version("east")
		return registry.Compare(west.Member.Version("east"), want) == 0 &&
			registry.Compare(h.Replicas[1].SliceVersion("east"), want) == 0 &&
			registry.Compare(h.Replicas[2].SliceVersion("east"), want) == 0
	})
	want := east.Member.Version("east")
	got, wantSvcs := west.Member.Services("east"), east.Member.Services("east")
	if len(got) != len(wantSvcs) {
		t.Fatalf("west holds %d of east's services, east %d (version %v)", len(got), len(wantSvcs), want)
	}
	for i := range got {
		if got[i].GetHostname() != wantSvcs[i].GetHostname() || len(got[i].GetEndpoints()) != len(wantSvcs[i].GetEndpoints()) {
			t.Errorf("west holds %s with %d endpoints, east %s with %d", got[i].GetHostname(), len(got[i].GetEndpoints()), wantSvcs[i].GetHostname(), len(wantSvcs[i].GetEndpoints()))
		}
	}
	t.Logf("east published %d updates; west holds its %d services at %v", published.Load(), len(got), west.Member.Version("east"))
}
