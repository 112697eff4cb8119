package member_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/registry"
	"google.golang.org/protobuf/proto"
)

// shopServices are n services of east with 3 endpoints each.
func shopServices(n int) []*registry.Service {
	out := make([]*registry.Service, n)
	for i := range out {
		out[i] = fedtest.CoffeeService("east", fmt.Sprintf("svc-%d", i), 3, 8080)
	}
	return out
}

// moved is a copy of s whose first endpoint moved to address.
func moved(s *registry.Service, address string) *registry.Service {
	c := proto.Clone(s).(*registry.Service)
	c.Endpoints[0].Address = address
	return c
}

// cloned is a deep copy of services, so that only their content matches.
func cloned(services []*registry.Service) []*registry.Service {
	out := make([]*registry.Service, len(services))
	for i, s := range services {
		out[i] = proto.Clone(s).(*registry.Service)
	}
	return out
}

// holds fails the test unless m holds exactly services for cluster.
func holds(t *testing.T, m *member.Member, cluster string, services []*registry.Service) {
	t.Helper()
	if held := m.Services(cluster); !sameServices(held, services) {
		t.Fatalf("%s holds %v of %s, want %v", m.Cluster(), held, cluster, services)
	}
}

// sameServices reports whether held and want are the same services,
// whatever their order.
func sameServices(held, want []*registry.Service) bool {
	if len(held) != len(want) {
		return false
	}
	for _, w := range want {
		i := slices.IndexFunc(held, func(s *registry.Service) bool { return s.GetHostname() == w.GetHostname() })
		if i < 0 || !proto.Equal(held[i], w) {
			return false
		}
	}
	return true
}

// counterAfter fails the test unless m's own slice is at the counter of
// before plus n, in the same incarnation.
func counterAfter(t *testing.T, m *member.Member, before *registry.Version, n uint64, what string) *registry.Version {
	t.Helper()
	v := m.Version(m.Cluster())
	if v.GetIncarnation() != before.GetIncarnation() || v.GetCounter() != before.GetCounter()+n {
		t.Fatalf("%s: own slice at %v, want %d records signed after %v", what, v, n, before)
	}
	return v
}

// An Update with the list already published signs nothing; one in which
// one service changed, or one went away, signs and sends that one record.
func TestUpdatePublishesOnlyWhatChanged(t *testing.T) {
	tm := newMesh(t, testTimers)
	east := tm.AddCluster("east")
	var mu sync.Mutex
	var applied []string // keys of east's records that west applied
	tm.Join("west")
	west := tm.StartMemberWith("west", func(c *member.Config) {
		c.OnApply = func(recs []*registry.Record) {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range recs {
				if r.GetCluster() == "east" {
					applied = append(applied, r.GetKey())
				}
			}
		}
	})
	appliedSince := func(v *registry.Version) []string {
		fedtest.Eventually(t, 10*time.Second, "west holds east's slice", func() bool {
			return registry.Compare(west.Member.Version("east"), v) == 0
		})
		mu.Lock()
		defer mu.Unlock()
		keys := applied
		applied = nil
		return keys
	}
	services := shopServices(6)
	east.Update(t, services...)
	v := east.Member.Version("east")
	appliedSince(v)

	east.Update(t, cloned(services)...)
	v = counterAfter(t, east.Member, v, 0, "the same list again")

	services[2] = moved(services[2], "10.9.9.9")
	east.Update(t, cloned(services)...)
	v = counterAfter(t, east.Member, v, 1, "one service changed")
	if got := appliedSince(v); !slices.Equal(got, []string{services[2].GetHostname()}) {
		t.Fatalf("west applied %q of east after one service changed, want only %q", got, services[2].GetHostname())
	}
	holds(t, west.Member, "east", services)

	gone := services[4].GetHostname()
	services = slices.Delete(services, 4, 5)
	east.Update(t, cloned(services)...)
	v = counterAfter(t, east.Member, v, 1, "one service withdrawn")
	if got := appliedSince(v); !slices.Equal(got, []string{gone}) {
		t.Fatalf("west applied %q of east after one service went away, want only %q", got, gone)
	}
	holds(t, west.Member, "east", services)
}

// Update compares the list with the slice before it takes the write lock.
// When another Update changed the slice in between, the comparison is
// redone: else a service the other Update replaced would look unchanged
// and keep the other Update's form.
func TestUpdateRedoesAComparisonThatAnotherUpdateOvertook(t *testing.T) {
	tm := newMesh(t, testTimers)
	east := tm.AddCluster("east")
	a := shopServices(4)
	east.Update(t, a...)
	// c changes service 1 of a; d, which lands in between, changes 0.
	c := slices.Clone(a)
	c[1] = moved(a[1], "10.7.7.7")
	d := slices.Clone(a)
	d[0] = moved(a[0], "10.8.8.8")

	ctx := fedtest.DeadlineContext(t, 10*time.Second)
	var afterD *registry.Version
	n, err := east.Member.UpdateAround(ctx, fedtest.ClusterInfo("east"), c, func() {
		before := east.Member.Version("east")
		east.Update(t, d...)
		afterD = counterAfter(t, east.Member, before, 1, "the update in between")
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("the overtaken update wrote %d records, want 2: service 0 back and service 1", n)
	}
	counterAfter(t, east.Member, afterD, 2, "the overtaken update")
	holds(t, east.Member, "east", c)
	fedtest.Eventually(t, 10*time.Second, "the hub holds east's last slice", func() bool {
		return registry.Compare(hubSlices(t, tm.AdminRegistry())["east"], east.Member.Version("east")) == 0
	})
}

// Updates from several goroutines at once leave the slice whole: it
// holds the list of one of them, not a mix, and giving that list again
// signs nothing.
func TestConcurrentUpdatesLeaveOneWholeList(t *testing.T) {
	tm := newMesh(t, testTimers)
	east := tm.AddCluster("east")
	base := shopServices(8)
	east.Update(t, base...)
	ctx := fedtest.DeadlineContext(t, 20*time.Second)
	const goroutines, rounds = 4, 10
	lists := make([][]*registry.Service, goroutines*rounds)
	for g := range goroutines {
		for i := range rounds {
			// Every list moves one service and leaves out another: a mix
			// of two lists differs from both.
			list := slices.Clone(base)
			list[(g+i)%len(list)] = moved(base[(g+i)%len(list)], fmt.Sprintf("10.6.%d.%d", g, i+1))
			lists[g*rounds+i] = slices.Delete(list, (g+i+1)%len(list), (g+i+1)%len(list)+1)
		}
	}
	errs := make(chan error, goroutines)
	for g := range goroutines {
		go func() {
			var err error
			for i := 0; i < rounds && err == nil; i++ {
				err = east.Member.Update(ctx, fedtest.ClusterInfo("east"), lists[g*rounds+i])
			}
			errs <- err
		}()
	}
	for range goroutines {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	held := east.Member.Services("east")
	last := slices.IndexFunc(lists, func(l []*registry.Service) bool { return sameServices(held, l) })
	if last < 0 {
		t.Fatalf("after concurrent updates east holds %v, which is none of their lists", held)
	}
	v := east.Member.Version("east")
	east.Update(t, cloned(lists[last])...)
	counterAfter(t, east.Member, v, 0, "the last list again")
}
