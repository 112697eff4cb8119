package member_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
)

// The scoped federation: three exporters of two services each (six in
// all), a cluster "importer" that imports some of them and a cluster
// "everything" that imports every service, as before scoped import.
var scopedExports = map[string][]string{
	"east":    {"order", "cart"},
	"west":    {"payment", "refund"},
	"central": {"inventory", "stock"},
}

func host(name string) string { return name + ".shop.svc.cluster.local" }

func hosts(names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = host(n)
	}
	return out
}

// startScoped starts the exporters, then the importer with imports and
// the everything-subscriber, and waits until both hold every slice's
// version; configure, if set, adjusts the importer's config.
func startScoped(t *testing.T, imports []string, configure func(*member.Config)) *fedtest.Mesh {
	t.Helper()
	tm := newMesh(t, testTimers)
	for _, c := range []string{"east", "west", "central"} {
		var svcs []*registry.Service
		for i, name := range scopedExports[c] {
			svcs = append(svcs, fedtest.CoffeeService(c, name, 2+i, 18080))
		}
		tm.AddCluster(c).Update(t, svcs...)
	}
	tm.Join("importer")
	tm.StartMemberWith("importer", func(cfg *member.Config) {
		cfg.Imports = registry.NewScope(imports)
		if configure != nil {
			configure(cfg)
		}
	}).Update(t)
	tm.AddCluster("everything").Update(t)
	for _, c := range []string{"east", "west", "central", "importer", "everything"} {
		fedtest.Eventually(t, 10*time.Second, c+" converged", func() bool { return tm.Converged(c) })
	}
	return tm
}

// heldServices returns the hostnames of the services m holds, by cluster.
func heldServices(m *member.Member) map[string][]string {
	out := make(map[string][]string)
	for _, c := range m.Clusters() {
		for _, s := range m.Services(c) {
			out[c] = append(out[c], s.GetHostname())
		}
	}
	return out
}

// storedKeys returns the record keys of other clusters in a member's store,
// as cluster/key ("" for cluster info).
func storedKeys(t *testing.T, st *store.Store, self string) []string {
	t.Helper()
	var out []string
	err := st.ForEach(store.BucketRecords, func(key string, _ []byte) error {
		cluster, k, _ := strings.Cut(key, "\x00")
		if cluster != self {
			out = append(out, cluster+"/"+k)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// importsOf returns the imports of cluster in a status.
func importsOf(st *hubpb.StatusResponse, cluster string) (*hubpb.ClusterStatus, map[string]*hubpb.Import) {
	out := make(map[string]*hubpb.Import)
	for _, cs := range st.GetClusters() {
		if cs.GetName() == cluster {
			for _, imp := range cs.GetImports() {
				out[imp.GetHost()] = imp
			}
			return cs, out
		}
	}
	return nil, out
}

// A cluster importing two of six services holds only those, in memory and
// on disk, yet every cluster's info, every slice's version and every
// cluster's liveness; one that imports everything holds all six.
func TestScopedImportReceivesOnlyImports(t *testing.T) {
	t.Parallel()
	tm := startScoped(t, hosts("order", "stock"), nil)
	imp, all := tm.Member("importer").Member, tm.Member("everything").Member

	want := map[string][]string{"east": hosts("order"), "central": hosts("stock")}
	fedtest.Eventually(t, 10*time.Second, "the importer holds its two imports", func() bool {
		got := heldServices(imp)
		return slices.Equal(got["east"], want["east"]) && slices.Equal(got["central"], want["central"]) && len(got["west"]) == 0
	})
	if got := heldServices(imp); len(got) != 2 {
		t.Fatalf("the importer holds services of %v, want east and central only", got)
	}
	wantStored := []string{"central/", "central/" + host("stock"), "east/", "east/" + host("order"), "everything/", "west/"}
	if got := storedKeys(t, tm.Member("importer").Store, "importer"); !slices.Equal(got, wantStored) {
		t.Fatalf("the importer's store holds %v, want %v", got, wantStored)
	}
	got := heldServices(all)
	n := 0
	for _, svcs := range got {
		n += len(svcs)
	}
	if n != 6 {
		t.Fatalf("the everything-subscriber holds %d services (%v), want 6", n, got)
	}

	// Gateways, trust and liveness stay global.
	for _, c := range []string{"east", "west", "central", "everything"} {
		if imp.ClusterDown(c) {
			t.Errorf("the importer sees %s down", c)
		}
		if registry.Compare(imp.Version(c), tm.Member(c).Member.Version(c)) != 0 {
			t.Errorf("the importer's version of %s is %v, want %v", c, imp.Version(c), tm.Member(c).Member.Version(c))
		}
	}
	for _, sum := range imp.Summaries() {
		if sum.Cluster != "importer" && sum.Info.GetTrustDomain() != sum.Cluster+".shop" {
			t.Errorf("the importer holds no cluster info of %s: %v", sum.Cluster, sum.Info)
		}
	}

	// Status, from the control plane and from the hub: what, from whom.
	for name, st := range map[string]*hubpb.StatusResponse{"member": imp.StatusNow(), "hub": hubStatus(t, tm)} {
		cs, imports := importsOf(st, "importer")
		if cs.GetImportsAll() || len(imports) != 2 {
			t.Fatalf("%s status: importer imports %v (all %v), want order and stock", name, imports, cs.GetImportsAll())
		}
		if i := imports[host("order")]; i.GetState() != gossip.ImportImported || !slices.Equal(i.GetFrom(), []string{"east"}) {
			t.Errorf("%s status: order import is %v, want imported from east", name, i)
		}
		if i := imports[host("stock")]; i.GetState() != gossip.ImportImported || !slices.Equal(i.GetFrom(), []string{"central"}) {
			t.Errorf("%s status: stock import is %v, want imported from central", name, i)
		}
	}
	if cs, _ := importsOf(hubStatus(t, tm), "everything"); !cs.GetImportsAll() {
		t.Errorf("hub status: the everything-subscriber does not import all: %v", cs)
	}
}

// A change of a service the importer does not import moves its version of
// the slice, so that gossip's newer digest does not send it to fetch what
// it left out; a change of an import arrives.
func TestScopedImportVersionsKeepUpWithoutFetching(t *testing.T) {
	t.Parallel()
	tm := startScoped(t, hosts("order"), nil)
	imp := tm.Member("importer").Member

	for i := range 5 {
		tm.Member("west").Update(t, fedtest.CoffeeService("west", "payment", 3+i, 18080), fedtest.CoffeeService("west", "refund", 3, 18080))
	}
	tm.Member("east").Update(t, fedtest.CoffeeService("east", "order", 7, 18080), fedtest.CoffeeService("east", "cart", 1, 18080))
	fedtest.Eventually(t, 10*time.Second, "the importer at west's and east's versions", func() bool {
		return tm.Converged("west") && tm.Converged("east")
	})
	if got := len(endpointsOf(imp, "east", "order")); got != 7 {
		t.Fatalf("the importer sees %d endpoints of order, want 7", got)
	}
	if got := imp.Services("west"); len(got) != 0 {
		t.Fatalf("the importer holds west's services %v, which it does not import", got)
	}
	// Converged, the importer has nothing left to fetch: gossip spreads
	// each digest within a few hundred milliseconds, and a member that
	// looked behind would fetch after peerFetchDelay (300ms), then again
	// after each backoff. Two seconds give it every chance to.
	fetches := imp.PeerFetches()
	deadline := time.Now().Add(2 * time.Second)
	fedtest.Eventually(t, 5*time.Second, "two seconds of gossip", func() bool { return time.Now().After(deadline) })
	if n := imp.PeerFetches() - fetches; n != 0 {
		t.Fatalf("the importer fetched from peers %d times while the hub was up", n)
	}
}

func hubStatus(t *testing.T, tm *fedtest.Mesh) *hubpb.StatusResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := tm.AdminRegistry().Status(ctx, &hubpb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Adding an import delivers the service whole, though older than the
// importer's version of the slice; dropping one forgets it, on disk too.
func TestScopedImportAddAndDrop(t *testing.T) {
	t.Parallel()
	tm := startScoped(t, hosts("order"), nil)
	imp := tm.Member("importer")
	ctx := fedtest.DeadlineContext(t, 10*time.Second)

	if err := imp.Member.SetImports(ctx, registry.NewScope(hosts("order", "refund"))); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 10*time.Second, "refund imported", func() bool { return len(endpointsOf(imp.Member, "west", "refund")) == 3 })
	if got := len(endpointsOf(imp.Member, "east", "order")); got != 2 {
		t.Fatalf("the importer sees %d endpoints of order after adding refund, want 2", got)
	}
	if got := heldServices(imp.Member)["west"]; !slices.Equal(got, hosts("refund")) {
		t.Fatalf("the importer holds %v of west, want refund only", got)
	}

	if err := imp.Member.SetImports(ctx, registry.NewScope(hosts("refund"))); err != nil {
		t.Fatal(err)
	}
	if got := imp.Member.Services("east"); len(got) != 0 {
		t.Fatalf("the importer still holds %v of east after dropping order", got)
	}
	want := []string{"central/", "east/", "everything/", "west/", "west/" + host("refund")}
	if got := storedKeys(t, imp.Store, "importer"); !slices.Equal(got, want) {
		t.Fatalf("the importer's store holds %v, want %v", got, want)
	}
	// A dropped import stays dropped: changes of order are not delivered.
	tm.Member("east").Update(t, fedtest.CoffeeService("east", "order", 4, 18080), fedtest.CoffeeService("east", "cart", 1, 18080))
	fedtest.Eventually(t, 10*time.Second, "the importer at east's version", func() bool { return tm.Converged("east") })
	if got := imp.Member.Services("east"); len(got) != 0 {
		t.Fatalf("the importer holds %v of east, which it no longer imports", got)
	}

	// Back to everything: every service arrives.
	if err := imp.Member.SetImports(ctx, nil); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 10*time.Second, "all six services", func() bool {
		n := 0
		for _, svcs := range heldServices(imp.Member) {
			n += len(svcs)
		}
		return n == 6
	})
}

// countingHandler counts the warnings and errors logged.
type countingHandler struct {
	slog.Handler
	mu       sync.Mutex
	messages []string
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.mu.Lock()
		h.messages = append(h.messages, r.Message)
		h.mu.Unlock()
	}
	return h.Handler.Handle(ctx, r)
}

func (h *countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &forward{h, h.Handler.WithAttrs(as)}
}
func (h *countingHandler) WithGroup(g string) slog.Handler {
	return &forward{h, h.Handler.WithGroup(g)}
}

func (h *countingHandler) warnings() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.messages)
}

// forward is a derived handler that counts into its root.
type forward struct {
	root *countingHandler
	slog.Handler
}

func (f *forward) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		f.root.mu.Lock()
		f.root.messages = append(f.root.messages, r.Message)
		f.root.mu.Unlock()
	}
	return f.Handler.Handle(ctx, r)
}

func (f *forward) WithAttrs(as []slog.Attr) slog.Handler {
	return &forward{f.root, f.Handler.WithAttrs(as)}
}
func (f *forward) WithGroup(g string) slog.Handler { return &forward{f.root, f.Handler.WithGroup(g)} }

// An import of a service nobody exports is pending in status, quietly,
// and imported as soon as a cluster exports it.
func TestScopedImportPending(t *testing.T) {
	t.Parallel()
	logs := &countingHandler{Handler: slog.NewTextHandler(&strings.Builder{}, &slog.HandlerOptions{Level: slog.LevelDebug})}
	tm := startScoped(t, hosts("order", "reviews"), func(cfg *member.Config) { cfg.Logger = slog.New(logs) })
	imp := tm.Member("importer").Member

	_, imports := importsOf(imp.StatusNow(), "importer")
	if i := imports[host("reviews")]; i.GetState() != gossip.ImportPending || len(i.GetFrom()) != 0 {
		t.Fatalf("reviews, exported by nobody, is %v, want pending", i)
	}
	if _, hubImports := importsOf(hubStatus(t, tm), "importer"); hubImports[host("reviews")].GetState() != gossip.ImportPending {
		t.Fatalf("hub status: reviews is %v, want pending", hubImports[host("reviews")])
	}
	// Pending is no error: the stream stays synced and nothing is logged.
	before := len(logs.warnings())
	deadline := time.Now().Add(time.Second)
	fedtest.Eventually(t, 5*time.Second, "a second of a pending import", func() bool { return time.Now().After(deadline) })
	if !imp.HubSynced() {
		t.Fatal("the importer's hub stream is not synced with a pending import")
	}
	if w := logs.warnings()[before:]; len(w) != 0 {
		t.Fatalf("the importer logged %v with a pending import", w)
	}

	tm.Member("central").Update(t, fedtest.CoffeeService("central", "inventory", 2, 18080), fedtest.CoffeeService("central", "reviews", 3, 18080))
	fedtest.Eventually(t, 10*time.Second, "reviews imported from central", func() bool {
		_, imports := importsOf(imp.StatusNow(), "importer")
		i := imports[host("reviews")]
		return i.GetState() == gossip.ImportImported && slices.Equal(i.GetFrom(), []string{"central"}) &&
			len(endpointsOf(imp, "central", "reviews")) == 3
	})
}

// A restarted importer resumes from its versions: it is sent only the
// imported records that changed while it was down, and its store and
// imports survive the restart.
func TestScopedImportResumeGetsOnlyNewerImports(t *testing.T) {
	t.Parallel()
	imports := hosts("order", "stock")
	tm := startScoped(t, imports, nil)
	tm.StopMember("importer")

	tm.Member("east").Update(t, fedtest.CoffeeService("east", "order", 5, 18080), fedtest.CoffeeService("east", "cart", 4, 18080))
	tm.Member("west").Update(t, fedtest.CoffeeService("west", "payment", 5, 18080))

	var mu sync.Mutex
	var applied []string
	imp := tm.StartMemberWith("importer", func(cfg *member.Config) {
		cfg.Imports = registry.NewScope(imports)
		cfg.OnApply = func(recs []*registry.Record) {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range recs {
				applied = append(applied, r.GetCluster()+"/"+r.GetKey())
			}
		}
	}).Member
	if got := len(endpointsOf(imp, "central", "stock")); got != 3 {
		t.Fatalf("the restarted importer serves %d endpoints of stock, want 3 from its store", got)
	}
	fedtest.Eventually(t, 10*time.Second, "the importer resumed", func() bool {
		return imp.HubSynced() && tm.Converged("east") && tm.Converged("west")
	})
	if got := len(endpointsOf(imp, "east", "order")); got != 5 {
		t.Fatalf("the importer sees %d endpoints of order, want 5", got)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range applied {
		if a != "east/"+host("order") {
			t.Errorf("the resumed importer was sent %s; want only east's changed order", a)
		}
	}
	if !slices.Contains(applied, "east/"+host("order")) {
		t.Errorf("the resumed importer applied %v, want east's order", applied)
	}
}

// With the hub down, a scoped member catches up from peers with only what
// it imports, and its version of the slice reaches the owner's.
func TestScopedImportPeerFetchWithoutHub(t *testing.T) {
	t.Parallel()
	tm := startScoped(t, hosts("order"), nil)
	imp := tm.Member("importer").Member
	tm.StopHub()
	tm.Member("east").Update(t, fedtest.CoffeeService("east", "order", 6, 18080), fedtest.CoffeeService("east", "cart", 6, 18080))
	fedtest.Eventually(t, 15*time.Second, "east's change by gossip and peer fetch", func() bool { return tm.Converged("east") })
	if got := len(endpointsOf(imp, "east", "order")); got != 6 {
		t.Fatalf("the importer sees %d endpoints of order, want 6", got)
	}
	if got := heldServices(imp)["east"]; !slices.Equal(got, hosts("order")) {
		t.Fatalf("the importer holds %v of east after a peer fetch, want order only", got)
	}
	if got := len(endpointsOf(tm.Member("everything").Member, "east", "cart")); got != 6 {
		t.Fatalf("the everything-subscriber sees %d endpoints of cart, want 6", got)
	}
}
