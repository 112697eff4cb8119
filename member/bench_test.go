package member_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"google.golang.org/protobuf/proto"
)

// The control-plane benchmarks of docs/benchmarks.md. Each one runs a real
// hub and real members in this process: loopback gRPC with mTLS, one bbolt
// file per component in a temporary directory, memberlist with the LAN
// profile. They are slow by nature, so run them once:
//
//	go test -run='^$' -bench=. -benchtime=1x -timeout=30m ./hub/

// benchTimers keep every cluster alive for the whole run.
var benchTimers = Timers{StaleAfter: time.Minute, DeadAfter: 2 * time.Minute, ExpireAfter: time.Hour}

// BenchmarkPropagation measures how long an endpoint change in one cluster
// takes to be applied by every other cluster: 10 clusters, 1000 services of
// 10 endpoints each, 200 changes at 20 per second in random clusters.
func BenchmarkPropagation(b *testing.B) {
	const (
		clusters   = 10
		services   = 1000
		endpoints  = 10
		changes    = 200
		perSecond  = 20
		settleTime = 2 * time.Minute
	)
	for range b.N {
		rec := newApplyRecorder()
		bm := newBenchMesh(b, clusters, rec.onApply)
		bm.load(services, endpoints, settleTime)

		rng := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(time.Second / perSecond)
		var updates []time.Duration
		b.ResetTimer()
		began := time.Now()
		for seq := 1; seq <= changes; seq++ {
			<-tick.C
			bmem := bm.members[rng.IntN(clusters)]
			i := rng.IntN(services)
			bmem.services[i] = changeService(bmem.services[i], seq)
			rec.expect(seq, bmem.name, clusters-1)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := bmem.member.Update(ctx, clusterInfo(bmem.name), bmem.services)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			updates = append(updates, time.Since(start))
		}
		tick.Stop()
		// Below perSecond when Update is slower than the tick: then the
		// load is no longer open-loop.
		rate := float64(changes) / time.Since(began).Seconds()
		lags, missing := rec.wait(30 * time.Second)
		b.StopTimer()
		if missing > 0 {
			b.Fatalf("%d of %d applies never arrived", missing, changes*(clusters-1))
		}
		lat := summarize(lags)
		upd := summarize(updates)
		b.ReportMetric(ms(lat.p50), "p50-ms")
		b.ReportMetric(ms(lat.p99), "p99-ms")
		b.ReportMetric(ms(lat.max), "max-ms")
		b.ReportMetric(ms(upd.p50), "update-p50-ms")
		b.ReportMetric(float64(len(lags)), "applies")
		b.ReportMetric(rate, "changes/s")
		b.Logf("propagation over %d applies at %.1f changes/s: p50 %s p99 %s max %s; Member.Update p50 %s p99 %s; slowest: %v",
			len(lags), rate, lat.p50, lat.p99, lat.max, upd.p50, upd.p99, rec.slowest(5))
	}
}

// BenchmarkHubMemory measures the heap the hub spends per stored endpoint
// with 20 clusters of 5000 endpoints (500 services of 10). The hub's share
// is measured by loading the hub's records into a fresh registry.Set, once
// as they arrive by Publish and once as the hub reads them from its file
// after a restart; the whole process (hub and 20 members) is reported too.
func BenchmarkHubMemory(b *testing.B) {
	const (
		clusters   = 20
		services   = 500
		endpoints  = 10
		settleTime = 2 * time.Minute
	)
	for range b.N {
		bm := newBenchMesh(b, clusters, nil)
		before := heapBytes()
		bm.load(services, endpoints, settleTime)
		after := heapBytes()
		total := float64(clusters * services * endpoints)

		signed := bm.hub.set.Since(nil)
		wire := make([][]byte, len(signed))
		for i, sr := range signed {
			wire[i], _ = proto.Marshal(sr)
		}
		signed = nil
		// The sets are measured in a quiet process.
		bm.stop()
		published, eps, err := publishedSetBytes(bm.hub, wire)
		if err != nil {
			b.Fatal(err)
		}
		if eps != int(total) {
			b.Fatalf("the hub holds %d endpoints, want %d", eps, int(total))
		}
		loaded, err := loadedSetBytes(filepath.Join(bm.dir, "hub", StoreFile))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(published)/total, "bytes/endpoint")
		b.ReportMetric(float64(loaded)/total, "loaded-bytes/endpoint")
		b.ReportMetric(float64(int64(after)-int64(before))/total, "process-bytes/endpoint")
		b.Logf("hub set: %.1f MiB for %d endpoints as published (%.0f B/endpoint), %.1f MiB as loaded from its file (%.0f B/endpoint); whole process (hub + %d members): +%.1f MiB",
			mib(published), int(total), float64(published)/total, mib(loaded), float64(loaded)/total, clusters, mib(after-before))
	}
}

// BenchmarkHubResync restarts a hub holding 20 clusters of 5000 endpoints
// from its bbolt file and measures the time from start until it is ready
// and until every member's subscription is synced again: five times at
// once, as after a crash, and once after an outage of 10 seconds, which
// lets the members' reconnect backoff grow.
func BenchmarkHubResync(b *testing.B) {
	const (
		clusters   = 20
		services   = 500
		endpoints  = 10
		restarts   = 5
		outage     = 10 * time.Second
		settleTime = 2 * time.Minute
	)
	for range b.N {
		bm := newBenchMesh(b, clusters, nil)
		bm.load(services, endpoints, settleTime)
		var stops, readies, syncs []time.Duration
		restart := func(down time.Duration) {
			start := time.Now()
			bm.stopHub()
			stops = append(stops, time.Since(start))
			bm.waitFor(30*time.Second, "every member to lose the hub stream", func() bool {
				return bm.countSynced() == 0
			})
			if down > 0 {
				outage := time.NewTimer(down)
				<-outage.C
			}
			start = time.Now()
			bm.startHub()
			readies = append(readies, time.Since(start))
			bm.waitFor(60*time.Second, "every member to resync", func() bool {
				return bm.countSynced() == clusters
			})
			syncs = append(syncs, time.Since(start))
			if got := len(bm.hub.set.Clusters()); got != clusters {
				b.Fatalf("restarted hub holds %d slices, want %d", got, clusters)
			}
		}
		b.ResetTimer()
		for range restarts {
			restart(0)
		}
		restart(outage)
		afterOutage := syncs[restarts]
		readies, syncs = readies[:restarts], syncs[:restarts]
		b.StopTimer()
		// How much of ready is reading the file, with the members quiet.
		bm.stop()
		open, load, err := timeLoad(filepath.Join(bm.dir, "hub", StoreFile))
		if err != nil {
			b.Fatal(err)
		}
		r, s, st := summarize(readies), summarize(syncs), summarize(stops)
		b.ReportMetric(ms(s.max), "resync-ms")
		b.ReportMetric(ms(s.p50), "resync-p50-ms")
		b.ReportMetric(ms(r.max), "ready-ms")
		b.ReportMetric(ms(st.max), "stop-ms")
		b.ReportMetric(ms(open+load), "open+load-ms")
		b.ReportMetric(ms(afterOutage), "resync-after-outage-ms")
		b.Logf("%d restarts: ready %v, all synced %v, stop %v; after a %s outage all synced in %s; opening the store takes %s and loading its records %s",
			restarts, readies, syncs, stops, outage, afterOutage, open, load)
	}
}

// benchMesh is the harness of the benchmarks: like testMesh, for any
// testing.TB, with a fixed hub gossip address so members find a restarted
// hub, and an optional OnApply hook on every member.
type benchMesh struct {
	tb      testing.TB
	dir     string
	log     *slog.Logger
	onApply func(cluster string, recs []*registry.Record)

	hubListen string
	hubGossip string
	hub       *Server
	hubStop   func()
	members   []*benchMember
}

type benchMember struct {
	name     string
	member   *Member
	stop     func()
	services []*registry.Service
}

func newBenchMesh(tb testing.TB, clusters int, onApply func(string, []*registry.Record)) *benchMesh {
	tb.Helper()
	checkGoroutines(tb)
	level := slog.LevelError
	if os.Getenv("FEDERATE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	bm := &benchMesh{
		tb: tb, dir: tb.TempDir(), onApply: onApply,
		log:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		hubListen: freeAddr(tb), hubGossip: freeAddr(tb),
	}
	tb.Cleanup(bm.stop)
	bm.startHub()
	for i := range clusters {
		bm.addMember(fmt.Sprintf("c%02d", i))
	}
	return bm
}

func (bm *benchMesh) startHub() {
	bm.tb.Helper()
	srv, err := New(Config{
		Mesh: "shop", Listen: bm.hubListen, GossipBind: bm.hubGossip, DataDir: filepath.Join(bm.dir, "hub"),
		GossipProfile: "lan", Timers: benchTimers, Logger: bm.log.With("node", "hub"),
	})
	if err != nil {
		bm.tb.Fatal(err)
	}
	bm.hub = srv
	bm.hubStop = runComponent(bm.tb, srv.Run, srv.Ready())
}

// stop stops every member, then the hub.
func (bm *benchMesh) stop() {
	var wg sync.WaitGroup
	for _, m := range bm.members {
		wg.Go(m.stop)
	}
	wg.Wait()
	if bm.hubStop != nil {
		bm.stopHub()
	}
}

func (bm *benchMesh) stopHub() {
	bm.hubStop()
	bm.hubStop = nil
}

func (bm *benchMesh) addMember(name string) {
	bm.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := Dial(bm.hubListen, filepath.Join(bm.dir, "hub", AdminCredFile), filepath.Join(bm.dir, "hub", CAFile))
	if err != nil {
		bm.tb.Fatal(err)
	}
	defer conn.Close()
	tok, err := hubpb.NewHubClient(conn).CreateToken(ctx, &hubpb.CreateTokenRequest{Cluster: name, TtlSeconds: 3600})
	if err != nil {
		bm.tb.Fatal(err)
	}
	ms, err := Join(ctx, tok.GetToken())
	if err != nil {
		bm.tb.Fatal(err)
	}
	dir := filepath.Join(bm.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		bm.tb.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "controlplane.db"))
	if err != nil {
		bm.tb.Fatal(err)
	}
	seeds := []string{bm.hubGossip}
	for _, other := range bm.members {
		if len(seeds) == 4 {
			break
		}
		seeds = append(seeds, other.member.GossipSeed())
	}
	var onApply func([]*registry.Record)
	if bm.onApply != nil {
		onApply = func(recs []*registry.Record) { bm.onApply(name, recs) }
	}
	m, err := NewMember(MemberConfig{
		Mesh: ms.Mesh, Cluster: name, Hub: ms.Hub, CA: ms.CA, Credential: ms.Credential, Store: st,
		Gossip: GossipConfig{Bind: "127.0.0.1:0", Seeds: seeds, Label: ms.Mesh, Profile: "lan", RejoinInterval: time.Second, Logger: bm.log.With("node", name)},
		Timers: benchTimers, Logger: bm.log.With("node", name), OnApply: onApply,
	})
	if err != nil {
		st.Close()
		bm.tb.Fatal(err)
	}
	stop := runComponent(bm.tb, m.Run, m.Ready())
	bm.members = append(bm.members, &benchMember{name: name, member: m, stop: func() {
		stop()
		st.Close()
	}})
}

// load publishes every member's services at once and waits until the hub
// and every member hold every slice, and every member is synced.
func (bm *benchMesh) load(services, endpoints int, timeout time.Duration) {
	bm.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	errs := make(chan error, len(bm.members))
	for ci, m := range bm.members {
		m.services = benchServices(ci, m.name, services, endpoints)
		go func() { errs <- m.member.Update(ctx, clusterInfo(m.name), m.services) }()
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
	const window = 500 * time.Millisecond
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(window)
	defer tick.Stop()
	start := time.Now()
	last := cpuTime(bm.tb)
	for {
		select {
		case <-deadline.C:
			bm.tb.Fatalf("the process did not quiet down within %s", timeout)
		case <-tick.C:
		}
		now := cpuTime(bm.tb)
		if now-last < window/10 {
			bm.tb.Logf("quiet %s after convergence", time.Since(start).Round(time.Millisecond))
			return
		}
		last = now
	}
}

// cpuTime is the CPU time this process has used.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (bm *benchMesh) converged() bool {
	for _, owner := range bm.members {
		want := owner.member.Version(owner.name)
		if registry.Compare(bm.hub.set.Version(owner.name), want) != 0 {
			return false
		}
		for _, m := range bm.members {
			if registry.Compare(m.member.Version(owner.name), want) != 0 {
				return false
			}
		}
	}
	return bm.countSynced() == len(bm.members)
}

func (bm *benchMesh) countSynced() int {
	n := 0
	for _, m := range bm.members {
		m.member.mu.Lock()
		if m.member.hubSynced {
			n++
		}
		m.member.mu.Unlock()
	}
	return n
}

// waitFor polls cond every 2ms, so durations measured around it are
// accurate to a few milliseconds.
func (bm *benchMesh) waitFor(timeout time.Duration, what string, cond func() bool) {
	bm.tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			bm.tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// checkGoroutines fails tb if goroutines started after this call are still
// running 20 seconds after every other cleanup.
func checkGoroutines(tb testing.TB) {
	before := goroutineIDs()
	tb.Cleanup(func() {
		deadline := time.NewTimer(20 * time.Second)
		defer deadline.Stop()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			var leaked []string
			for id, stack := range goroutineStacks() {
				if !before[id] && !strings.Contains(stack, "checkGoroutines") {
					leaked = append(leaked, stack)
				}
			}
			if len(leaked) == 0 {
				return
			}
			select {
			case <-deadline.C:
				tb.Errorf("%d goroutines leaked; first:\n%s", len(leaked), leaked[0])
				return
			case <-tick.C:
			}
		}
	})
}

func goroutineIDs() map[string]bool {
	ids := make(map[string]bool)
	for id := range goroutineStacks() {
		ids[id] = true
	}
	return ids
}

func goroutineStacks() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := make(map[string]string)
	for _, g := range strings.Split(string(buf), "\n\n") {
		head, _, _ := strings.Cut(g, " [")
		out[head] = g
	}
	return out
}

// benchServices returns a cluster's services: each with one port and
// endpoints that carry locality, network and SPIFFE ID, as a control plane
// exports them.
func benchServices(ci int, cluster string, services, endpoints int) []*registry.Service {
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

// changeService returns a copy of s in which one endpoint moved to a new
// address, as when a pod is replaced, and every endpoint carries the
// change's sequence number as its pod-template-hash label. Update keeps the
// services it is given, so they are never changed in place.
func changeService(s *registry.Service, seq int) *registry.Service {
	c := proto.Clone(s).(*registry.Service)
	ep := c.Endpoints[seq%len(c.Endpoints)]
	ep.Address = fmt.Sprintf("10.%d.%d.%d", 200+seq/62500, seq/250%250, seq%250+1)
	for _, ep := range c.Endpoints {
		ep.Labels = map[string]string{"pod-template-hash": strconv.Itoa(seq)}
	}
	return c
}

// applyRecorder collects, for every change, when each other member applied it.
type applyRecorder struct {
	mu      sync.Mutex // guards the fields below
	changes map[int]*pendingChange
	lags    []time.Duration
	samples []applySample
	missing int
	done    chan struct{} // closed when nothing is missing
}

type applySample struct {
	seq             int
	owner, receiver string
	lag             time.Duration
}

func (s applySample) String() string {
	return fmt.Sprintf("change %d %s->%s %s", s.seq, s.owner, s.receiver, s.lag.Round(10*time.Microsecond))
}

// slowest returns the n slowest applies.
func (r *applyRecorder) slowest(n int) []applySample {
	r.mu.Lock()
	s := slices.Clone(r.samples)
	r.mu.Unlock()
	slices.SortFunc(s, func(a, b applySample) int { return int(b.lag - a.lag) })
	return s[:min(n, len(s))]
}

type pendingChange struct {
	owner   string
	start   time.Time
	applied map[string]bool // receivers that applied it
	waiting int             // receivers that have not
}

func newApplyRecorder() *applyRecorder {
	return &applyRecorder{changes: make(map[int]*pendingChange)}
}

func (r *applyRecorder) expect(seq int, owner string, receivers int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes[seq] = &pendingChange{owner: owner, start: time.Now(), applied: make(map[string]bool), waiting: receivers}
	r.missing += receivers
}

// onApply runs under the member's lock: it only records.
func (r *applyRecorder) onApply(cluster string, recs []*registry.Record) {
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
		r.samples = append(r.samples, applySample{seq: seq, owner: c.owner, receiver: cluster, lag: now.Sub(c.start)})
	}
	if r.missing == 0 && r.done != nil {
		close(r.done)
		r.done = nil
	}
}

// wait returns the lags once every expected apply arrived or timeout passed,
// with the number of applies still missing.
func (r *applyRecorder) wait(timeout time.Duration) ([]time.Duration, int) {
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

// publishedSetBytes is the heap a fresh registry.Set holds after the hub's
// Publish path (decode from the wire, verify, apply) took in wire, and the
// endpoints it counts.
func publishedSetBytes(hub *Server, wire [][]byte) (uint64, int, error) {
	verifier := registry.NewVerifier(hub.cfg.Mesh, []*x509.Certificate{hub.ca.Cert})
	before := heapBytes()
	set := registry.NewSet(false)
	for _, b := range wire {
		sr := new(registrypb.SignedRecord)
		if err := proto.Unmarshal(b, sr); err != nil {
			return 0, 0, err
		}
		rec, err := verifier.Verify(sr)
		if err != nil {
			return 0, 0, err
		}
		set.Apply([]registry.Verified{{Record: rec, Signed: sr}})
	}
	after := heapBytes()
	eps := 0
	for _, s := range set.Summaries() {
		eps += s.Endpoints
	}
	runtime.KeepAlive(set)
	runtime.KeepAlive(verifier)
	runtime.KeepAlive(wire)
	return after - before, eps, nil
}

// loadedSetBytes is the heap a hub's set holds after loadRecords read the
// stopped hub's file.
func loadedSetBytes(path string) (uint64, error) {
	st, err := store.Open(path)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	before := heapBytes()
	s := &Server{store: st, set: registry.NewSet(false)}
	if err := s.loadRecords(); err != nil {
		return 0, err
	}
	after := heapBytes()
	runtime.KeepAlive(s)
	return after - before, nil
}

// timeLoad times opening a stopped hub's store and loading its records.
func timeLoad(path string) (open, load time.Duration, err error) {
	start := time.Now()
	st, err := store.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer st.Close()
	open = time.Since(start)
	start = time.Now()
	s := &Server{store: st, set: registry.NewSet(false)}
	err = s.loadRecords()
	return open, time.Since(start), err
}

// heapBytes is the live heap once collections stop freeing anything:
// objects reachable from a finalizer survive a collection, so what an
// earlier benchmark left behind can take a few cycles to go.
func heapBytes() uint64 {
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

type stats struct{ p50, p99, max time.Duration }

// summarize returns nearest-rank percentiles.
func summarize(ds []time.Duration) stats {
	if len(ds) == 0 {
		return stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p int) time.Duration { return s[(len(s)*p+99)/100-1] }
	return stats{p50: rank(50), p99: rank(99), max: s[len(s)-1]}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// freeAddr returns a loopback address nobody listens on now.
