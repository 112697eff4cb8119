package member_test

import (
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
)

// A removed cluster's control plane goes on serving its last-known state,
// and its stream and its publishes meet the hub's refusal at every try. It
// says so once, with what to do, and tries again every 30 s, not at the
// quick backoff of a hub that is away.
func TestRemovedClusterSaysOnceThatTheHubRefusesIt(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.AddCluster("east")
	tm.Join("west")
	logs := &countingHandler{Handler: slog.NewTextHandler(io.Discard, nil)}
	west := tm.StartMemberWith("west", func(c *member.Config) { c.Logger = slog.New(logs) })
	fedtest.Eventually(t, 10*time.Second, "west streams from the hub", west.Member.HubStreamSynced)

	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	if _, err := tm.AdminClient().RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: "west"}); err != nil {
		t.Fatal(err)
	}
	const refused = "the hub refuses this cluster's credential; serving the last-known state and trying again every 30s; join again with a new token ('federate join') if the cluster was removed"
	count := func(msg string) int {
		return len(slices.DeleteFunc(logs.warnings(), func(m string) bool { return m != msg }))
	}
	fedtest.Eventually(t, 10*time.Second, "west says the hub refuses it", func() bool { return count(refused) > 0 })
	// West publishes a change: another try, refused again, said no more.
	west.Update(t, fedtest.CoffeeService("west", "payment", 1, 8081))
	time.Sleep(3 * time.Second)
	if n := count(refused); n != 1 {
		t.Errorf("west said %d times that the hub refuses it, want once", n)
	}
	for _, quick := range []string{"hub stream ended; reconnecting", "publish to hub failed; retrying"} {
		if n := count(quick); n > 1 {
			t.Errorf("west logged %q %d times in 3 s after its removal, want at most once", quick, n)
		}
	}
}
