package member_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/registry"
)

// A control plane whose store was deleted (or truncated to 0 bytes) starts
// a new incarnation with a new root: its slice and bundle replace the old
// ones at the hub and at every peer, although the bundle's sequence starts
// again at 1.
func TestLostStoreStartsNewIncarnation(t *testing.T) {
	for _, loss := range []string{"deleted", "truncated"} {
		t.Run(loss, func(t *testing.T) {
			t.Parallel()
			tm := fedtest.NewMesh(t, gossip.Timers{StaleAfter: time.Minute})
			east := tm.AddCluster("east")
			west := tm.AddCluster("west")
			east.Update(t, fedtest.CoffeeService("east", "order", 2, 8080))
			old := east.Member.Version("east")
			fedtest.Eventually(t, 10*time.Second, "west has east's slice", func() bool {
				return registry.Compare(west.Member.Version("east"), old) == 0
			})
			oldRoot := east.Member.Authority().Bundle()

			tm.StopMember("east")
			path := filepath.Join(east.Dir, "controlplane.db")
			if loss == "deleted" {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
			east = tm.StartMember("east")
			if east.Member.Authority().Bundle().Equal(oldRoot) {
				t.Fatal("the restarted control plane kept its old root")
			}
			east.Update(t, fedtest.CoffeeService("east", "order", 3, 8080), fedtest.CoffeeService("east", "payment", 1, 8081))
			fresh := east.Member.Version("east")
			if fresh.GetIncarnation() <= old.GetIncarnation() {
				t.Fatalf("incarnation %d after the loss, want more than %d", fresh.GetIncarnation(), old.GetIncarnation())
			}
			fedtest.Eventually(t, 10*time.Second, "west has east's new incarnation with its services", func() bool {
				return registry.Compare(west.Member.Version("east"), fresh) == 0 && len(west.Member.Services("east")) == 2
			})
			fedtest.Eventually(t, 10*time.Second, "the hub holds east's new incarnation and trust domain", func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				st, err := tm.AdminRegistry().Status(ctx, &hubpb.StatusRequest{})
				if err != nil {
					return false
				}
				for _, cs := range st.GetClusters() {
					if cs.GetName() == "east" {
						return registry.Compare(cs.GetSliceVersion(), fresh) == 0 && cs.GetTrustDomain() == "east.shop" && cs.GetBundleSequence() == 1
					}
				}
				return false
			})
			// West trusts east's new root, and no longer needs the old one.
			td := east.Member.Authority().TrustDomain()
			b, err := west.Member.Bundles().GetBundleForTrustDomain(td)
			if err != nil {
				t.Fatal(err)
			}
			if !b.Equal(east.Member.Authority().Bundle()) {
				t.Errorf("west holds east's bundle %v, want the new root's", b)
			}
		})
	}
}
