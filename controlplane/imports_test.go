package controlplane_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
)

// A control plane with an import list holds only the services it names;
// SetImports swaps them while it runs, and its status says what it
// imports and from whom.
func TestIntegrationControlPlaneImportList(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, testTimers)
	t.Cleanup(tm.StopMembers)
	tm.Join("east")
	tm.StartControlPlane("east", controlplane.Config{Source: fedtest.NewSource(
		fedtest.CoffeeService("east", "order", 2, 18080), fedtest.CoffeeService("east", "cart", 3, 18080))})
	tm.Join("west")
	order, cart := "order.shop.svc.cluster.local", "cart.shop.svc.cluster.local"
	cp := tm.StartControlPlane("west", controlplane.Config{Source: fedtest.NewSource(), Imports: []string{order}})
	m := cp.Member()
	names := func() []string {
		var out []string
		for _, s := range m.Services("east") {
			out = append(out, s.GetName())
		}
		return out
	}
	fedtest.Eventually(t, 10*time.Second, "west to import order", func() bool { return slices.Equal(names(), []string{"order"}) })
	fedtest.Eventually(t, 10*time.Second, "west at east's version", func() bool { return tm.Converged("east") })
	if got := names(); !slices.Equal(got, []string{"order"}) {
		t.Fatalf("west holds %v of east, want order only", got)
	}

	ctx := fedtest.DeadlineContext(t, 10*time.Second)
	if err := cp.SetImports(ctx, []string{cart}); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 10*time.Second, "west to import cart instead", func() bool { return slices.Equal(names(), []string{"cart"}) })
	for _, cs := range m.StatusNow().GetClusters() {
		if cs.GetName() != "west" {
			continue
		}
		imps := cs.GetImports()
		if len(imps) != 1 || imps[0].GetHost() != cart || imps[0].GetState() != gossip.ImportImported || !slices.Equal(imps[0].GetFrom(), []string{"east"}) {
			t.Fatalf("west's status imports %v, want cart from east", imps)
		}
	}
	if err := cp.SetImports(ctx, []string{"not a host"}); err == nil || !strings.Contains(err.Error(), "not a service hostname") {
		t.Fatalf("SetImports of a bad hostname: %v", err)
	}
}

func TestNewRefusesBadImports(t *testing.T) {
	t.Parallel()
	_, err := controlplane.New(controlplane.Config{Cluster: "east", Network: "n", DataDir: t.TempDir(), ConfigDir: t.TempDir(),
		Imports: []string{"order.shop.svc.cluster.local", "*.shop"}})
	if err == nil || !strings.Contains(err.Error(), `import "*.shop" is not a service hostname`) {
		t.Fatalf("New with a wildcard import: %v", err)
	}
}
