package workloads

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	networkingpb "istio.io/api/networking/v1"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
)

// unpublished is a federation in which the cluster has published nothing
// yet, as at a control plane's start.
type unpublished struct{ noFederation }

func (unpublished) Cluster() string               { return "central" }
func (unpublished) Summaries() []registry.Summary { return nil }

// An agent that connects before its control plane first publishes gets
// the cluster's network and locality all the same: without a network,
// every cluster would take the VM for one of its own network, and on
// Kubernetes its mirrored WorkloadEntry, which has the cluster's network,
// would be a second endpoint of it.
func TestEntryHasTheClusterNetworkBeforeTheFirstPublish(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	loc, err := registry.ParseLocality("us-east/zone-a")
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{Federation: unpublished{}, Store: st, Logger: slog.New(slog.DiscardHandler),
		Info: &registry.ClusterInfo{Network: "net-central", Locality: loc}})
	if err != nil {
		t.Fatal(err)
	}
	g := &workloadGroup{Namespace: "shop", Name: "barista",
		spec: &networkingpb.WorkloadGroup{Template: &networkingpb.WorkloadEntry{ServiceAccount: "barista"}}}
	w.connect(g, spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/barista"), "10.0.0.1", &agentpb.Register{InboundPort: 15006})
	if es := w.Entries(); len(es) != 1 || es[0].Network != "net-central" || es[0].Locality != "us-east/zone-a" {
		t.Errorf("entries %+v, want one on net-central in us-east/zone-a", es)
	}
}
