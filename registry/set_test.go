package registry_test

import (
	"slices"
	"testing"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
)

var (
	setClusters = []string{"east", "west", "central"}
	setKeys     = []string{registry.InfoKey, "a.shop", "b.shop", "c.shop"}
)

// setOp is one step of a FuzzSetApply program.
type setOp struct {
	remove   bool // drop the cluster instead of applying a record
	endBatch bool // apply the batch collected so far after this op
	rec      registry.Verified
}

// decodeSetOps reads three bytes per op: flags, incarnation, counter.
func decodeSetOps(data []byte) []setOp {
	var ops []setOp
	for ; len(data) >= 3; data = data[3:] {
		flags, inc, counter := data[0], data[1], data[2]
		cluster := setClusters[int(flags&3)%len(setClusters)]
		key := setKeys[flags>>2&3]
		op := setOp{remove: flags>>6 == 3, endBatch: flags&0x20 != 0}
		rec := &registry.Record{
			Cluster: cluster, Key: key, Deleted: flags&0x10 != 0,
			// Verify refuses incarnation 0, so the set never sees it.
			Version: &registry.Version{Incarnation: 1 + uint64(inc%3), Counter: uint64(counter % 8)},
		}
		if !rec.Deleted {
			if key == registry.InfoKey {
				rec.Body = &registrypb.Record_Info{Info: &registry.ClusterInfo{Network: "net-" + cluster}}
			} else {
				rec.Body = &registrypb.Record_Service{Service: &registry.Service{
					Hostname: key, Endpoints: make([]*registry.Endpoint, counter%4),
				}}
			}
		}
		body, _ := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
		op.rec = registry.Verified{Record: rec, Signed: &registrypb.SignedRecord{Record: body}}
		ops = append(ops, op)
	}
	return ops
}

type entryView struct {
	Incarnation, Counter uint64
	Deleted              bool
}

// setView is everything a Set holds, by cluster and key.
func setView(s *registry.Set) map[string]map[string]entryView {
	out := make(map[string]map[string]entryView)
	for _, c := range s.Clusters() {
		out[c] = make(map[string]entryView)
		for k, e := range s.Entries(c) {
			out[c][k] = entryView{e.Version.GetIncarnation(), e.Version.GetCounter(), e.Deleted}
		}
	}
	return out
}

func decodeSigned(t *testing.T, sr *registrypb.SignedRecord) *registry.Record {
	t.Helper()
	rec := new(registry.Record)
	if err := proto.Unmarshal(sr.GetRecord(), rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// checkSetInvariants checks what every reader of a Set relies on.
func checkSetInvariants(t *testing.T, s *registry.Set) {
	t.Helper()
	versions := s.Versions()
	for _, c := range s.Clusters() {
		var newest *registry.Version
		live, endpoints := 0, 0
		var hosts []string
		for k, e := range s.Entries(c) {
			if registry.Compare(e.Version, newest) > 0 {
				newest = e.Version
			}
			if e.Version.GetIncarnation() != s.Version(c).GetIncarnation() {
				t.Fatalf("%s/%s is of incarnation %d, the slice of %d", c, k, e.Version.GetIncarnation(), s.Version(c).GetIncarnation())
			}
			if !e.Deleted && k != registry.InfoKey {
				live++
				endpoints += e.Endpoints
				if e.Service != nil {
					hosts = append(hosts, e.Service.GetHostname())
				}
			}
		}
		// The counts and the sorted list are kept as records apply, not
		// counted when read: they must match a count from scratch.
		slices.Sort(hosts)
		var listed []string
		for _, svc := range s.Services(c) {
			listed = append(listed, svc.GetHostname())
		}
		if !slices.Equal(listed, hosts) {
			t.Fatalf("Services(%s) lists %v, want %v", c, listed, hosts)
		}
		if registry.Compare(s.Version(c), newest) != 0 {
			t.Fatalf("%s is at %s but its newest entry is %s", c, registry.FormatVersion(s.Version(c)), registry.FormatVersion(newest))
		}
		if registry.Compare(versions[c], newest) != 0 {
			t.Fatalf("Versions has %s at %s, want %s", c, registry.FormatVersion(versions[c]), registry.FormatVersion(newest))
		}
		for _, sum := range s.Summaries() {
			if sum.Cluster == c && (sum.Services != live || sum.Endpoints != endpoints) {
				t.Fatalf("summary of %s counts %d services and %d endpoints, want %d and %d", c, sum.Services, sum.Endpoints, live, endpoints)
			}
		}
	}
	// A newcomer gets every live record and no tombstone.
	live := 0
	for _, c := range s.Clusters() {
		for _, e := range s.Entries(c) {
			if !e.Deleted {
				live++
			}
		}
	}
	all := s.Since(nil)
	for _, sr := range all {
		if rec := decodeSigned(t, sr); rec.GetDeleted() {
			t.Fatalf("Since(nil) returned the tombstone %s/%s", rec.GetCluster(), rec.GetKey())
		}
	}
	if len(all) != live {
		t.Fatalf("Since(nil) returned %d records, want the %d live ones", len(all), live)
	}
	// A peer that is up to date gets nothing.
	if got := s.Since(versions); len(got) != 0 {
		t.Fatalf("Since(Versions()) returned %d records", len(got))
	}
	// A peer one step behind in the same incarnation gets exactly the newer
	// records, tombstones included.
	for c, v := range versions {
		if v.GetCounter() == 0 {
			continue
		}
		behind := &registry.Version{Incarnation: v.GetIncarnation(), Counter: v.GetCounter() - 1}
		want := 0
		for _, e := range s.Entries(c) {
			if registry.Compare(e.Version, behind) > 0 {
				want++
			}
		}
		got := 0
		for _, sr := range s.Since(map[string]*registry.Version{c: behind}) {
			if decodeSigned(t, sr).GetCluster() == c {
				got++
			}
		}
		if got != want {
			t.Fatalf("Since(%s at %s) returned %d records of it, want %d", c, registry.FormatVersion(behind), got, want)
		}
	}
}

func FuzzSetApply(f *testing.F) {
	op := func(cluster, key int, deleted, end bool, inc, counter byte) []byte {
		flags := byte(cluster) | byte(key)<<2
		if deleted {
			flags |= 0x10
		}
		if end {
			flags |= 0x20
		}
		return []byte{flags, inc, counter}
	}
	seq := func(ops ...[]byte) []byte {
		var b []byte
		for _, o := range ops {
			b = append(b, o...)
		}
		return b
	}
	f.Add(seq(op(0, 0, false, false, 0, 1), op(0, 1, false, true, 0, 2)))
	// A tombstone, then an older copy of the record it deleted.
	f.Add(seq(op(0, 1, false, true, 0, 2), op(0, 1, true, true, 0, 3), op(0, 1, false, true, 0, 1)))
	// A new incarnation replaces the slice; the old one cannot come back.
	f.Add(seq(op(1, 1, false, false, 0, 5), op(1, 2, false, true, 0, 6), op(1, 3, false, true, 1, 1), op(1, 1, false, true, 0, 7)))
	// Several versions of one key in a batch, in any order.
	f.Add(seq(op(2, 2, false, false, 1, 3), op(2, 2, false, false, 1, 1), op(2, 2, true, false, 2, 0), op(2, 3, false, true, 1, 4)))
	// A removed cluster comes back.
	f.Add(seq(op(0, 1, false, true, 0, 1), []byte{0xc0, 0, 0}, op(0, 2, false, true, 0, 1)))

	f.Fuzz(func(t *testing.T, data []byte) {
		ops := decodeSetOps(data)
		// a receives whole batches; b receives what a.Newer picked from
		// them, as the hub and members persist and apply.
		a, b := registry.NewSet(true), registry.NewSet(false)
		var batch []registry.Verified
		flush := func() {
			if len(batch) == 0 {
				return
			}
			before := setView(a)
			fresh := a.Newer(batch)
			changed := a.Apply(batch)
			b.Apply(fresh)
			after := setView(a)
			if diff := cmp.Diff(after, setView(b)); diff != "" {
				t.Fatalf("applying Newer's pick differs from applying the batch (-batch +newer):\n%s", diff)
			}
			if (len(changed) == 0) != cmp.Equal(before, after) {
				t.Fatalf("Apply reported %d changes; the set went from %v to %v", len(changed), before, after)
			}
			if again := a.Apply(batch); len(again) != 0 {
				t.Fatalf("applying the same batch again changed %d records", len(again))
			}
			if again := a.Newer(batch); len(again) != 0 {
				t.Fatalf("Newer picks %d records of a batch already applied", len(again))
			}
			if diff := cmp.Diff(after, setView(a)); diff != "" {
				t.Fatalf("applying the same batch again changed the set:\n%s", diff)
			}
			checkSetInvariants(t, a)
			batch = nil
		}
		for _, o := range ops {
			if o.remove {
				flush()
				c := o.rec.Record.GetCluster()
				if a.Remove(c) != b.Remove(c) {
					t.Fatalf("remove %s: the sets disagree on whether it was there", c)
				}
				if v := a.Version(c); v != nil {
					t.Fatalf("removed %s is still at %s", c, registry.FormatVersion(v))
				}
				continue
			}
			batch = append(batch, o.rec)
			if o.endBatch {
				flush()
			}
		}
		flush()
	})
}

func TestSetApplyExamples(t *testing.T) {
	rec := func(cluster, key string, inc, counter uint64, deleted bool) registry.Verified {
		r := &registry.Record{Cluster: cluster, Key: key, Deleted: deleted, Version: &registry.Version{Incarnation: inc, Counter: counter}}
		if !deleted {
			r.Body = &registrypb.Record_Service{Service: &registry.Service{Hostname: key}}
		}
		body, _ := proto.Marshal(r)
		return registry.Verified{Record: r, Signed: &registrypb.SignedRecord{Record: body}}
	}
	tests := []struct {
		name  string
		apply [][]registry.Verified
		want  map[string]map[string]entryView
	}{
		{
			name:  "newer counter wins",
			apply: [][]registry.Verified{{rec("east", "a", 1, 2, false)}, {rec("east", "a", 1, 1, false)}, {rec("east", "a", 1, 3, false)}},
			want:  map[string]map[string]entryView{"east": {"a": {1, 3, false}}},
		},
		{
			name:  "tombstone keeps an older copy out",
			apply: [][]registry.Verified{{rec("east", "a", 1, 1, false), rec("east", "a", 1, 2, true)}, {rec("east", "a", 1, 1, false)}},
			want:  map[string]map[string]entryView{"east": {"a": {1, 2, true}}},
		},
		{
			name:  "new incarnation replaces the slice",
			apply: [][]registry.Verified{{rec("east", "a", 1, 9, false), rec("east", "b", 1, 8, false)}, {rec("east", "c", 2, 1, false)}, {rec("east", "a", 1, 10, false)}},
			want:  map[string]map[string]entryView{"east": {"c": {2, 1, false}}},
		},
		{
			name:  "slices are independent",
			apply: [][]registry.Verified{{rec("east", "a", 3, 1, false), rec("west", "a", 1, 1, false)}},
			want:  map[string]map[string]entryView{"east": {"a": {3, 1, false}}, "west": {"a": {1, 1, false}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := registry.NewSet(true)
			for _, b := range tc.apply {
				s.Apply(b)
			}
			if diff := cmp.Diff(tc.want, setView(s)); diff != "" {
				t.Fatalf("set (-want +got):\n%s", diff)
			}
			checkSetInvariants(t, s)
		})
	}
}
