package member_test

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/registry"
)

// benchMesh is the benchmarks' federation: a fedtest.Mesh with clusters
// c00, c01, ..., logging errors only, and an optional OnApply hook on
// every member.
type benchMesh struct {
	*fedtest.Mesh
	tb      testing.TB
	admin   hubpb.RegistryClient
	members []*benchMember
	// serviceName, if set, names service si of cluster ci; the default
	// gives every cluster the same names.
	serviceName func(ci, si int) string
	// quietShare, if set, is the share of a CPU under which the process
	// counts as quiet after the load (default a tenth).
	quietShare float64
}

type benchMember struct {
	name     string
	member   *member.Member
	services []*registry.Service
}

func newBenchMesh(tb testing.TB, clusters int, onApply func(string, []*registry.Record)) *benchMesh {
	tb.Helper()
	return newBenchMeshWith(tb, clusters, benchTimers, onApply)
}

// newBenchMeshWith is newBenchMesh with the members' liveness timers.
func newBenchMeshWith(tb testing.TB, clusters int, timers gossip.Timers, onApply func(string, []*registry.Record)) *benchMesh {
	tb.Helper()
	return newBenchMeshConfigured(tb, clusters, timers, onApply, nil)
}

// newBenchMeshConfigured is newBenchMeshWith with a hook to adjust the
// config of member i.
func newBenchMeshConfigured(tb testing.TB, clusters int, timers gossip.Timers, onApply func(string, []*registry.Record), configure func(int, *member.Config)) *benchMesh {
	tb.Helper()
	level := slog.LevelError
	if os.Getenv("FEDERATE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	tm := fedtest.NewMeshWith(tb, timers, func(c *hub.Config) { c.Logger = log.With("node", "hub") })
	bm := &benchMesh{Mesh: tm, tb: tb, admin: tm.AdminRegistry()}
	for i := range clusters {
		name := fmt.Sprintf("c%02d", i)
		tm.Join(name)
		m := tm.StartMemberWith(name, func(c *member.Config) {
			c.Logger = log.With("node", name)
			c.Gossip.Logger = c.Logger
			if onApply != nil {
				c.OnApply = func(recs []*registry.Record) { onApply(name, recs) }
			}
			if configure != nil {
				configure(i, c)
			}
		})
		bm.members = append(bm.members, &benchMember{name: name, member: m.Member})
	}
	return bm
}

// stop stops every member at once, then the hub.
func (bm *benchMesh) stop() {
	bm.StopMembers()
	bm.StopHub()
}

// load publishes every member's services at once and waits until the hub
// and every member hold every slice, and every member is synced.
func (bm *benchMesh) load(services, endpoints int, timeout time.Duration) {
	bm.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	errs := make(chan error, len(bm.members))
	for ci, m := range bm.members {
		m.services = fedtest.BenchServices(ci, m.name, services, endpoints)
		if bm.serviceName != nil {
			for si, svc := range m.services {
				svc.Name = bm.serviceName(ci, si)
				svc.Hostname = svc.Name + ".bench.svc.cluster.local"
			}
		}
		go func() { errs <- m.member.Update(ctx, fedtest.ClusterInfo(m.name), m.services) }()
	}
	for range bm.members {
		if err := <-errs; err != nil {
			bm.tb.Fatal(err)
		}
	}
	bm.waitFor(timeout, "every slice everywhere", bm.converged)
	bm.waitQuiet(timeout)
}

// waitQuiet waits until the process used less than a tenth of a CPU over
// half a second, so that leftovers of the load (peer fetches of slices that
// gossip announced before the hub delivered them, collections of the load's
// garbage) do not land in a measurement.
func (bm *benchMesh) waitQuiet(timeout time.Duration) {
	bm.tb.Helper()
	fedtest.WaitQuietBelow(bm.tb, timeout, cmp.Or(bm.quietShare, 0.1))
}

// converged reports whether every member holds every owner's version and
// is synced, and the hub holds every owner's version too (asked last, as
// it takes a call).
func (bm *benchMesh) converged() bool {
	for _, owner := range bm.members {
		want := owner.member.Version(owner.name)
		for _, m := range bm.members {
			if registry.Compare(m.member.Version(owner.name), want) != 0 {
				return false
			}
		}
	}
	if bm.countSynced() != len(bm.members) {
		return false
	}
	held := bm.hubSlices()
	for _, owner := range bm.members {
		if registry.Compare(held[owner.name], owner.member.Version(owner.name)) != 0 {
			return false
		}
	}
	return true
}

// hubSlices returns the slice versions the hub holds, by cluster.
func (bm *benchMesh) hubSlices() map[string]*registry.Version {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := bm.admin.Status(ctx, &hubpb.StatusRequest{})
	if err != nil {
		bm.tb.Fatal(err)
	}
	out := make(map[string]*registry.Version)
	for _, c := range st.GetClusters() {
		out[c.GetName()] = c.GetSliceVersion()
	}
	return out
}

func (bm *benchMesh) countSynced() int {
	n := 0
	for _, m := range bm.members {
		if m.member.HubSynced() {
			n++
		}
	}
	return n
}

// waitFor polls cond every 2ms, so durations measured around it are
// accurate to a few milliseconds (fedtest.Eventually polls every 20ms).
func (bm *benchMesh) waitFor(timeout time.Duration, what string, cond func() bool) {
	bm.tb.Helper()
	fedtest.WaitFor(bm.tb, timeout, what, cond)
}
