package registry_test

import (
	"slices"
	"testing"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"google.golang.org/protobuf/proto"
)

func scopeRecord(cluster, key string, inc, counter uint64, deleted bool) registry.Verified {
	rec := &registry.Record{Cluster: cluster, Key: key, Deleted: deleted, Version: &registry.Version{Incarnation: inc, Counter: counter}}
	switch {
	case deleted:
	case key == registry.InfoKey:
		rec.Body = &registrypb.Record_Info{Info: &registry.ClusterInfo{Network: "net-" + cluster}}
	default:
		rec.Body = &registrypb.Record_Service{Service: &registry.Service{Hostname: key}}
	}
	body, _ := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	return registry.Verified{Record: rec, Signed: &registrypb.SignedRecord{Record: body}}
}

// keysOf decodes signed records to cluster/key, sorted.
func keysOf(t *testing.T, recs []*registrypb.SignedRecord) []string {
	t.Helper()
	var out []string
	for _, sr := range recs {
		rec := new(registry.Record)
		if err := proto.Unmarshal(sr.GetRecord(), rec); err != nil {
			t.Fatal(err)
		}
		out = append(out, rec.GetCluster()+"/"+rec.GetKey())
	}
	slices.Sort(out)
	return out
}

func TestScopeParsing(t *testing.T) {
	if !registry.NewScope(nil).All() || !registry.NewScope([]string{"a.shop", "*"}).All() {
		t.Fatal("nil and \"*\" are not every service")
	}
	none := registry.NewScope([]string{})
	if none.All() || none.Includes("a.shop") || !none.Includes(registry.InfoKey) {
		t.Fatal("an empty list imports a service, or not the cluster info")
	}
	if got, err := registry.ParseImports(" a.shop , b.shop,,"); err != nil || !slices.Equal(got, []string{"a.shop", "b.shop"}) {
		t.Fatalf("ParseImports = %v, %v", got, err)
	}
	for _, bad := range []string{"a b", "*.shop", "a.shop/x", ".shop", "a.shop:80"} {
		if _, err := registry.ParseImports(bad); err == nil {
			t.Errorf("ParseImports(%q) accepted it", bad)
		}
	}
	ab, a := registry.NewScope([]string{"a.shop", "b.shop"}), registry.NewScope([]string{"a.shop"})
	if !ab.Covers(a) || a.Covers(ab) || !registry.NewScope(nil).Covers(ab) || ab.Covers(nil) {
		t.Fatal("Covers is wrong")
	}
	if got := ab.Beyond(a); !slices.Equal(got, []string{"b.shop"}) {
		t.Fatalf("Beyond = %v, want b.shop", got)
	}
	if got := ab.Intersect(registry.NewScope([]string{"b.shop", "c.shop"})).Hosts(); !slices.Equal(got, []string{"b.shop"}) {
		t.Fatalf("Intersect = %v, want b.shop", got)
	}
}

// SinceIn leaves out what is not imported, and sends the added imports
// whole whatever the known versions.
func TestSetSinceInScope(t *testing.T) {
	s := registry.NewSet(false)
	s.Apply([]registry.Verified{
		scopeRecord("east", registry.InfoKey, 1, 1, false),
		scopeRecord("east", "a.shop", 1, 2, false),
		scopeRecord("east", "b.shop", 1, 3, false),
		scopeRecord("east", "c.shop", 1, 4, false),
		scopeRecord("east", "d.shop", 1, 5, true),
	})
	a := registry.NewScope([]string{"a.shop", "d.shop"})
	if got, want := keysOf(t, s.SinceIn(nil, a, nil)), []string{"east/", "east/a.shop"}; !slices.Equal(got, want) {
		t.Fatalf("SinceIn(nothing known) = %v, want %v", got, want)
	}
	known := map[string]*registry.Version{"east": {Incarnation: 1, Counter: 5}}
	if got := keysOf(t, s.SinceIn(known, a, nil)); len(got) != 0 {
		t.Fatalf("SinceIn(all known) = %v, want nothing", got)
	}
	ab := registry.NewScope([]string{"a.shop", "b.shop"})
	if got, want := keysOf(t, s.SinceIn(known, ab, []string{"b.shop"})), []string{"east/b.shop"}; !slices.Equal(got, want) {
		t.Fatalf("SinceIn(b added) = %v, want %v", got, want)
	}
	if got := keysOf(t, s.SinceIn(map[string]*registry.Version{"east": {Incarnation: 1, Counter: 1}}, nil, nil)); len(got) != 4 {
		t.Fatalf("SinceIn(every service) = %v, want the four newer records", got)
	}
}

// Advance moves a slice's version past records left out; Withdraw forgets
// what is no longer imported but keeps the versions.
func TestSetAdvanceAndWithdraw(t *testing.T) {
	s := registry.NewSet(true)
	s.Apply([]registry.Verified{scopeRecord("east", registry.InfoKey, 1, 1, false), scopeRecord("east", "a.shop", 1, 2, false)})
	if s.Advance("east", &registry.Version{Incarnation: 1, Counter: 9}) {
		t.Fatal("Advance in the same incarnation reset the slice")
	}
	if v := s.Version("east"); v.GetCounter() != 9 {
		t.Fatalf("version after Advance = %v, want 1.9", v)
	}
	if s.Advance("east", &registry.Version{Incarnation: 1, Counter: 3}) || s.Version("east").GetCounter() != 9 {
		t.Fatal("an older Advance moved the version back")
	}
	// A record older than the advanced version, never held, is accepted.
	if got := s.Apply([]registry.Verified{scopeRecord("east", "b.shop", 1, 4, false)}); len(got) != 1 {
		t.Fatal("an older record of a key not held was refused after Advance")
	}
	gone := s.Withdraw(registry.NewScope([]string{"b.shop"}), "own")
	if len(gone) != 1 || gone[0] != (registry.RecordRef{Cluster: "east", Key: "a.shop"}) {
		t.Fatalf("Withdraw = %v, want east/a.shop", gone)
	}
	if svcs := s.Services("east"); len(svcs) != 1 || svcs[0].GetHostname() != "b.shop" || s.Version("east").GetCounter() != 9 {
		t.Fatalf("after Withdraw: services %v version %v", svcs, s.Version("east"))
	}
	if got := s.Exporters("b.shop"); !slices.Equal(got, []string{"east"}) {
		t.Fatalf("Exporters(b.shop) = %v", got)
	}
	if !s.Advance("east", &registry.Version{Incarnation: 2, Counter: 1}) || len(s.Services("east")) != 0 {
		t.Fatal("Advance to a new incarnation kept the older one's records")
	}
}
