package hub_test

import (
	"slices"
	"testing"
	"time"

	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
)

// A member that joined while the hub was one replica learns the replicas
// started since from its stream, and follows the hub onto them once the
// replica it joined with is gone for good: at once, and after a restart
// of its own, from the replicas it kept in its store.
func TestHAMemberFollowsReplicasStartedAfterItJoined(t *testing.T) {
	h := newHAMesh(t, 1)
	h.AddCluster("east")
	west := h.AddCluster("west")
	ms, err := membership.LoadMembership(h.Dir + "/west")
	if err != nil {
		t.Fatal(err)
	}
	if got := membership.HubAddrs(ms.Hub); !slices.Equal(got, []string{h.Addr(0)}) {
		t.Fatalf("west joined with hubs %v, want replica 0's alone", got)
	}
	fedtest.Eventually(t, 10*time.Second, "west streams from the hub", west.Member.HubStreamSynced)

	h.StartReplica(1)
	h.StartReplica(2)
	knowsAll := func() bool {
		got := west.Member.Hubs()
		return len(got) == 3 && got[0] == h.Addr(0) && slices.Contains(got, h.Addr(1)) && slices.Contains(got, h.Addr(2))
	}
	fedtest.Eventually(t, 30*time.Second, "west learns replicas 1 and 2, after the one it joined with", knowsAll)

	onNewReplica := func() bool {
		return west.Member.HubStreamSynced() && h.Replicas[1].SubscribersOf("west")+h.Replicas[2].SubscribersOf("west") > 0
	}
	h.StopReplica(0)
	fedtest.Eventually(t, 10*time.Second, "west streams from replica 1 or 2 once replica 0 is gone", onNewReplica)

	// Replica 0 stays gone; west's membership still names it alone.
	h.StopMember("west")
	west = h.StartMember("west")
	fedtest.Eventually(t, 10*time.Second, "restarted west streams from replica 1 or 2", onNewReplica)
	// What the hub names is what etcd lists: a replica whose lease lapsed
	// under load drops out until it is listed again.
	fedtest.Eventually(t, 30*time.Second, "restarted west dials replica 0's address, then replicas 1 and 2", knowsAll)
}
