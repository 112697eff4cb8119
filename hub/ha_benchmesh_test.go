package hub_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// haBenchTimers keep every cluster alive for the whole run.
var haBenchTimers = gossip.Timers{StaleAfter: time.Minute, DeadAfter: 2 * time.Minute, ExpireAfter: time.Hour}

// haBench is the benchmarks' federation on hub replicas: 3 replicas on a
// 3-member etcd (haMesh), clusters c00, c01, ... of which cluster i is
// given replica i%3 first, so that the members spread over the replicas;
// everything logs errors only.
type haBench struct {
	*haMesh
	tb      testing.TB
	members []*haBenchMember
}

type haBenchMember struct {
	name     string
	member   *member.Member
	services []*registry.Service
}

func newHABench(tb testing.TB, clusters int, onApply func(string, []*registry.Record)) *haBench {
	tb.Helper()
	level := slog.LevelError
	if os.Getenv("FEDERATE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	hb := &haBench{haMesh: newHAMeshWith(tb, 3, haBenchTimers, log), tb: tb}
	// Replicas list themselves in etcd once serving; a token names those
	// listed when it is made.
	fedtest.Eventually(tb, 10*time.Second, "every replica listed in etcd", func() bool { return hb.listedReplicas() == len(hb.Replicas) })
	for i := range clusters {
		name := fmt.Sprintf("c%02d", i)
		hb.Join(name)
		m := hb.StartMemberWith(name, func(c *member.Config) {
			if n := len(membership.HubAddrs(c.Hub)); n != len(hb.Replicas) {
				tb.Fatalf("%s's membership names %d hubs, want the %d replicas", name, n, len(hb.Replicas))
			}
			c.Hub = rotateHubs(c.Hub, i%len(hb.Replicas))
			c.Logger = log.With("node", name)
			c.Gossip.Logger = c.Logger
			if onApply != nil {
				c.OnApply = func(recs []*registry.Record) { onApply(name, recs) }
			}
		})
		hb.members = append(hb.members, &haBenchMember{name: name, member: m.Member})
	}
	return hb
}

// listedReplicas counts the replicas listed in etcd.
func (hb *haBench) listedReplicas() int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := hb.etcd().Get(ctx, hub.DefaultEtcdPrefix+store.BucketMeta+"/replicas/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		hb.tb.Fatal(err)
	}
	return int(resp.Count)
}

// rotateHubs puts the k-th of a list of hub addresses first: a member
// streams from the first replica that answers.
func rotateHubs(hub string, k int) string {
	addrs := membership.HubAddrs(hub)
	k %= len(addrs)
	return strings.Join(slices.Concat(addrs[k:], addrs[:k]), ",")
}

// load publishes every member's services at once and waits until every
// replica and every member hold every slice, every member is synced, and
// the process is quiet.
func (hb *haBench) load(services, endpoints int, timeout time.Duration) {
	hb.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	errs := make(chan error, len(hb.members))
	for ci, m := range hb.members {
		m.services = fedtest.BenchServices(ci, m.name, services, endpoints)
		go func() { errs <- m.member.Update(ctx, fedtest.ClusterInfo(m.name), m.services) }()
	}
	for range hb.members {
		if err := <-errs; err != nil {
			hb.tb.Fatal(err)
		}
	}
	hb.waitConverged(timeout, "every slice everywhere")
	fedtest.WaitQuiet(hb.tb, timeout)
	hb.tb.Logf("members streaming from each replica: %v", hb.spread())
}

// converged reports whether every member holds every owner's version and
// is synced, and every running replica holds every owner's version.
func (hb *haBench) converged() bool {
	for _, owner := range hb.members {
		want := owner.member.Version(owner.name)
		for _, m := range hb.members {
			if registry.Compare(m.member.Version(owner.name), want) != 0 {
				return false
			}
		}
		for i, r := range hb.Replicas {
			if hb.running(i) && registry.Compare(r.SliceVersion(owner.name), want) != 0 {
				return false
			}
		}
	}
	return hb.countSynced() == len(hb.members)
}

// waitConverged waits until converged, and says what is missing if it
// does not come.
func (hb *haBench) waitConverged(timeout time.Duration, what string) {
	hb.tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !hb.converged() {
		select {
		case <-deadline.C:
			hb.tb.Fatalf("timed out after %s waiting for %s: %s", timeout, what, hb.missing())
		case <-tick.C:
		}
	}
}

// missing describes what keeps the mesh from having converged.
func (hb *haBench) missing() string {
	var out []string
	for _, m := range hb.members {
		if !m.member.HubStreamSynced() {
			out = append(out, m.name+" not synced")
		}
	}
	for _, owner := range hb.members {
		want := owner.member.Version(owner.name)
		for _, m := range hb.members {
			if got := m.member.Version(owner.name); registry.Compare(got, want) != 0 {
				out = append(out, fmt.Sprintf("%s holds %s at %s of %s", m.name, owner.name, registry.FormatVersion(got), registry.FormatVersion(want)))
			}
		}
		for i, r := range hb.Replicas {
			if got := r.SliceVersion(owner.name); hb.running(i) && registry.Compare(got, want) != 0 {
				out = append(out, fmt.Sprintf("replica %d holds %s at %s of %s", i, owner.name, registry.FormatVersion(got), registry.FormatVersion(want)))
			}
		}
	}
	if len(out) > 30 {
		out = append(out[:30], fmt.Sprintf("and %d more", len(out)-30))
	}
	return strings.Join(out, "; ")
}

// running reports whether replica i runs: its stop is still armed.
func (hb *haBench) running(i int) bool { return !hb.stopped[i] }

func (hb *haBench) countSynced() int {
	n := 0
	for _, m := range hb.members {
		if m.member.HubStreamSynced() {
			n++
		}
	}
	return n
}

// spread counts the members streaming from each replica.
func (hb *haBench) spread() []int {
	out := make([]int, len(hb.Replicas))
	for i, r := range hb.Replicas {
		if !hb.running(i) {
			continue
		}
		for _, m := range hb.members {
			out[i] += r.SubscribersOf(m.name)
		}
	}
	return out
}

// streamingFrom returns the members streaming from replica i.
func (hb *haBench) streamingFrom(i int) []*haBenchMember {
	var out []*haBenchMember
	for _, m := range hb.members {
		if hb.Replicas[i].SubscribersOf(m.name) > 0 {
			out = append(out, m)
		}
	}
	return out
}

// loadAverage is the machine's load average, as /proc/loadavg gives it:
// the benchmarks share their cores.
func loadAverage(tb testing.TB) string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		tb.Logf("no load average: %v", err)
		return "unknown"
	}
	return strings.Join(strings.Fields(string(data))[:3], " ")
}
