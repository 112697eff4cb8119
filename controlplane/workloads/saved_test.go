package workloads

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/federate/federate/registry/store"
)

// The store keeps entries as they change; a restart restores them: one
// saved connected is ready as it was until the grace period ends, one
// saved disconnected keeps its time; one that does not decode is dropped
// from the store, and the others' imports are what the cluster imports.
// A store last written longer than a grace period ago brings none back.
func TestSavedEntriesComeBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	w := testServer(t, st, nil, now)
	connected := &workloadEntry{namespace: "shop", name: "barista-10.0.0.1", group: "barista", address: "10.0.0.1",
		id: spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/barista"), inboundPort: 15006, probed: true, healthy: true,
		imports: []string{"payment.shop.svc.cluster.local", "*"}, streams: 1, labels: map[string]string{"app": "barista"}}
	gone := &workloadEntry{namespace: "shop", name: "barista-10.0.0.2", group: "barista", address: "10.0.0.2",
		id: spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/barista"), inboundPort: 15006, healthy: true,
		imports: []string{"stock.shop.svc.cluster.local"}, disconnectedAt: now.Add(-time.Second)}
	w.mu.Lock()
	for _, e := range []*workloadEntry{connected, gone} {
		w.entries[e.namespace+"/"+e.name] = e
		w.markLocked(e.namespace + "/" + e.name)
	}
	w.mu.Unlock()
	w.save(context.Background(), false)
	if err := st.Write(context.Background(), store.Op{Bucket: store.BucketWorkloads, Key: "shop/broken", Value: []byte("{not json")}); err != nil {
		t.Fatal(err)
	}

	// Long after: the store is stale, nothing comes back.
	stale, err := LoadSaved(st, DefaultGrace, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(stale.entries) != 0 || len(stale.dropped) != 3 || len(stale.Imports()) != 0 {
		t.Errorf("a minute later, %d entries come back, %d dropped, imports %v; want none, 3, none", len(stale.entries), len(stale.dropped), stale.Imports())
	}

	later := now.Add(time.Second)
	saved, err := LoadSaved(st, DefaultGrace, later)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := saved.Imports(), []string{"payment.shop.svc.cluster.local", "stock.shop.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Errorf("saved imports %v, want %v (a hostname only, never every service)", got, want)
	}
	r := testServer(t, st, saved, later)
	got := map[string]EntryStatus{}
	for _, e := range r.Entries() {
		got[e.Name] = e
	}
	if e := got["barista-10.0.0.1"]; !e.Healthy || e.Connected || !e.Restored || e.Labels["app"] != "barista" {
		t.Errorf("restored connected entry %+v, want healthy as saved, restored, not connected yet, with its labels", e)
	}
	if e, ok := got["barista-10.0.0.2"]; !ok || e.Healthy || e.Restored {
		t.Errorf("restored disconnected entry %+v (present %v), want it present and unhealthy", e, ok)
	}
	if len(got) != 2 {
		t.Errorf("restored %d entries, want 2: %v", len(got), got)
	}
	if d := r.entries["shop/barista-10.0.0.2"].disconnectedAt; !d.Equal(gone.disconnectedAt) {
		t.Errorf("the disconnected entry's time is %v, want %v as saved", d, gone.disconnectedAt)
	}
	if d := r.entries["shop/barista-10.0.0.1"].disconnectedAt; !d.Equal(later) {
		t.Errorf("the connected entry waits from %v, want the restart, %v", d, later)
	}

	// The grace period passes: the sweep removes both, the save deletes
	// them and the broken one from the store.
	r.cfg.Now = func() time.Time { return later.Add(r.cfg.Grace) }
	r.sweep()
	r.save(context.Background(), false)
	left := 0
	if err := st.ForEach(store.BucketWorkloads, func(key string, _ []byte) error { left++; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(r.Entries()) != 0 || left != 0 {
		t.Errorf("after the grace period: %d entries, %d in the store; want none", len(r.Entries()), left)
	}
}

// testServer is a Server on st at a fixed time, which serves no agent:
// its federation is never called.
func testServer(t *testing.T, st *store.Store, saved *Saved, now time.Time) *Server {
	t.Helper()
	w, err := New(Config{Federation: noFederation{}, Store: st, Saved: saved, Logger: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

type noFederation struct{ Federation }
