package hub_test

import (
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/registry"
	"google.golang.org/grpc/codes"
)

// Only the admin removes clusters: a cluster's credential can remove
// neither another cluster nor itself, and the refused calls withdraw
// nothing.
func TestSecurityClusterRemovesNoCluster(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	west := tm.AddCluster("west")
	west.Update(t, fedtest.CoffeeService("west", "payment", 2, 18081))
	tm.Join("east")
	fedtest.Eventually(t, 10*time.Second, "west's slice at the hub", func() bool {
		return registry.Compare(tm.Hub.SliceVersion("west"), west.Member.Version("west")) == 0
	})
	before := tm.Hub.SliceVersion("west")
	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	asEast := hubpb.NewHubClient(tm.DialAsCluster(t, "east"))
	for _, target := range []string{"west", "east"} {
		_, err := asEast.RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: target})
		st := fedtest.WantCode(t, err, "east's credential removing "+target, codes.PermissionDenied)
		if !strings.Contains(st.Message(), "may not remove clusters") {
			t.Errorf("refusal %q does not say who may remove clusters", st.Message())
		}
	}
	if got := tm.Hub.SliceVersion("west"); registry.Compare(got, before) != 0 {
		t.Fatalf("west at the hub is %s after the refused removal, want %s", registry.FormatVersion(got), registry.FormatVersion(before))
	}
	// Both credentials still work.
	for _, c := range []string{"east", "west"} {
		if _, err := hubpb.NewRegistryClient(tm.DialAsCluster(t, c)).Status(ctx, &hubpb.StatusRequest{}); err != nil {
			t.Errorf("%s's credential after the refused removals: %v", c, err)
		}
	}
}
