package fedtest

import (
	"fmt"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"google.golang.org/protobuf/proto"
)

// The control-plane benchmarks' workload and measures, as in
// member/bench_test.go, for the benchmarks of other packages (the hub's
// replicas on etcd): the same services, changes, percentiles and heap
// reading, so that their figures compare.

// BenchServices returns a cluster's services: each with one port and
// endpoints that carry locality, network and SPIFFE ID, as a control
// plane exports them.
func BenchServices(ci int, cluster string, services, endpoints int) []*registry.Service {
	out := make([]*registry.Service, services)
	for si := range services {
		name := fmt.Sprintf("svc-%04d", si)
		s := &registry.Service{
			Hostname: name + ".bench.svc.cluster.local", Namespace: "bench", Name: name,
			Ports: []*registry.Port{{Name: "http", Number: 8080, Protocol: "HTTP"}},
		}
		for ei := range endpoints {
			n := si*endpoints + ei
			s.Endpoints = append(s.Endpoints, &registry.Endpoint{
				Address:  fmt.Sprintf("10.%d.%d.%d", ci, n/250, n%250+1),
				Ports:    map[string]uint32{"http": 8080},
				Locality: &registry.Locality{Region: "region-" + cluster, Zone: fmt.Sprintf("zone-%d", ei%3)},
				Network:  "net-" + cluster, Health: registrypb.Health_HEALTHY,
				SpiffeId: "spiffe://" + cluster + ".shop/ns/bench/sa/" + name,
			})
		}
		out[si] = s
	}
	return out
}

// ChangeService returns a copy of s in which one endpoint moved to a new
// address, as when a pod is replaced, and every endpoint carries the
// change's sequence number as its pod-template-hash label.
func ChangeService(s *registry.Service, seq int) *registry.Service {
	c := proto.Clone(s).(*registry.Service)
	ep := c.Endpoints[seq%len(c.Endpoints)]
	ep.Address = fmt.Sprintf("10.%d.%d.%d", 200+seq/62500, seq/250%250, seq%250+1)
	for _, ep := range c.Endpoints {
		ep.Labels = map[string]string{"pod-template-hash": strconv.Itoa(seq)}
	}
	return c
}

// ApplyRecorder collects, for every change, when each other member
// applied it (member.Config.OnApply).
type ApplyRecorder struct {
	mu      sync.Mutex // guards the fields below
	changes map[int]*pendingChange
	lags    []time.Duration
	missing int
	done    chan struct{} // closed when nothing is missing
}

type pendingChange struct {
	owner   string
	start   time.Time
	applied map[string]bool // receivers that applied it
	waiting int             // receivers that have not
}

func NewApplyRecorder() *ApplyRecorder {
	return &ApplyRecorder{changes: make(map[int]*pendingChange)}
}

// Expect notes change seq of owner, made now, due at receivers members.
func (r *ApplyRecorder) Expect(seq int, owner string, receivers int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes[seq] = &pendingChange{owner: owner, start: time.Now(), applied: make(map[string]bool), waiting: receivers}
	r.missing += receivers
}

// OnApply runs under the member's lock: it only records.
func (r *ApplyRecorder) OnApply(cluster string, recs []*registry.Record) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range recs {
		eps := rec.GetService().GetEndpoints()
		if len(eps) == 0 {
			continue
		}
		seq, err := strconv.Atoi(eps[0].GetLabels()["pod-template-hash"])
		if err != nil {
			continue
		}
		c := r.changes[seq]
		if c == nil || c.owner != rec.GetCluster() || c.applied[cluster] || c.waiting == 0 {
			continue
		}
		c.applied[cluster] = true
		c.waiting--
		r.missing--
		r.lags = append(r.lags, now.Sub(c.start))
	}
	if r.missing == 0 && r.done != nil {
		close(r.done)
		r.done = nil
	}
}

// Wait returns the lags once every expected apply arrived or timeout
// passed, with the number of applies still missing.
func (r *ApplyRecorder) Wait(timeout time.Duration) ([]time.Duration, int) {
	r.mu.Lock()
	done := make(chan struct{})
	if r.missing == 0 {
		close(done)
	} else {
		r.done = done
	}
	r.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = nil
	return slices.Clone(r.lags), r.missing
}

// Stats are nearest-rank percentiles of durations.
type Stats struct{ P50, P99, Max time.Duration }

// Summarize returns nearest-rank percentiles.
func Summarize(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p int) time.Duration { return s[(len(s)*p+99)/100-1] }
	return Stats{P50: rank(50), P99: rank(99), Max: s[len(s)-1]}
}

// Ms is d in milliseconds, for b.ReportMetric.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// MiB is b in mebibytes.
func MiB(b uint64) float64 { return float64(b) / (1 << 20) }

// HeapBytes is the live heap once collections stop freeing anything:
// objects reachable from a finalizer survive a collection, so what an
// earlier benchmark left behind can take a few cycles to go.
func HeapBytes() uint64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var last uint64
	for range 10 {
		runtime.GC()
		runtime.Gosched() // let the finalizer goroutine run
		metrics.Read(sample)
		now := sample[0].Value.Uint64()
		if last != 0 && now+now/1000 >= last {
			return now
		}
		last = now
	}
	return last
}

// WaitHeapSettled waits until the live heap, read every half second,
// changes by less than 0.5 %, and returns it: stopped members and hubs
// leave goroutines, timers and connections that take seconds to go, and
// what they free during a measurement would count against it.
func WaitHeapSettled(tb testing.TB, timeout time.Duration) uint64 {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	prev := HeapBytes()
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		now := HeapBytes()
		if max(now, prev)-min(now, prev) < prev/200 {
			return now
		}
		prev = now
	}
	tb.Fatalf("the heap did not settle within %s", timeout)
	return 0
}

// CPUTime is the CPU time this process has used.
func CPUTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// WaitQuiet waits until the process used less than a tenth of a CPU over
// half a second, so that the leftovers of a load do not land in a
// measurement.
func WaitQuiet(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	WaitQuietBelow(tb, timeout, 0.1)
}

// WaitQuietBelow is WaitQuiet for a process whose idle state uses more
// than a tenth of a CPU (a hundred gossip members heartbeat each other
// every second): it waits until the process used less than share of a
// CPU over half a second.
func WaitQuietBelow(tb testing.TB, timeout time.Duration, share float64) {
	tb.Helper()
	const window = 500 * time.Millisecond
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(window)
	defer tick.Stop()
	start := time.Now()
	last := CPUTime(tb)
	for {
		select {
		case <-deadline.C:
			tb.Fatalf("the process did not quiet down within %s", timeout)
		case <-tick.C:
		}
		now := CPUTime(tb)
		if used := now - last; used < time.Duration(share*float64(window)) {
			tb.Logf("quiet %s after convergence (%.2f of a CPU)", time.Since(start).Round(time.Millisecond), float64(used)/float64(window))
			return
		}
		last = now
	}
}

// WaitFor polls cond every 2 ms, so that durations measured around it
// are accurate to a few milliseconds (Eventually polls every 20 ms).
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}
