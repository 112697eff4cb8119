package member_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"google.golang.org/protobuf/proto"
)

// The control-plane benchmarks of docs/benchmarks.md. Each one runs a real
// hub and real members in this process: loopback gRPC with mTLS, one bbolt
// file per component in a temporary directory, memberlist with the LAN
// profile. They are slow by nature, so run them once:
//
//	go test -run='^$' -bench=. -benchtime=1x -timeout=30m ./member/

// benchTimers keep every cluster alive for the whole run.
var benchTimers = gossip.Timers{StaleAfter: time.Minute, DeadAfter: 2 * time.Minute, ExpireAfter: time.Hour}

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
			bmem.services[i] = fedtest.ChangeService(bmem.services[i], seq)
			rec.expect(seq, bmem.name, clusters-1)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := bmem.member.Update(ctx, fedtest.ClusterInfo(bmem.name), bmem.services)
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
		lat := fedtest.Summarize(lags)
		upd := fedtest.Summarize(updates)
		b.ReportMetric(fedtest.Ms(lat.P50), "p50-ms")
		b.ReportMetric(fedtest.Ms(lat.P99), "p99-ms")
		b.ReportMetric(fedtest.Ms(lat.Max), "max-ms")
		b.ReportMetric(fedtest.Ms(upd.P50), "update-p50-ms")
		b.ReportMetric(float64(len(lags)), "applies")
		b.ReportMetric(rate, "changes/s")
		b.Logf("propagation over %d applies at %.1f changes/s: p50 %s p99 %s max %s; Member.Update p50 %s p99 %s; slowest: %v",
			len(lags), rate, lat.P50, lat.P99, lat.Max, upd.P50, upd.P99, rec.slowest(5))
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
		before := fedtest.HeapBytes()
		bm.load(services, endpoints, settleTime)
		after := fedtest.HeapBytes()
		total := float64(clusters * services * endpoints)

		// The sets are measured in a quiet process.
		bm.stop()
		path := filepath.Join(bm.Dir, "hub", hub.StoreFile)
		wire, err := storedRecords(path)
		if err != nil {
			b.Fatal(err)
		}
		ca, err := trust.LoadCertificates(filepath.Join(bm.Dir, "hub", membership.CAFile))
		if err != nil {
			b.Fatal(err)
		}
		published, _, eps, err := publishedSetBytes(bm.members[0].member.Mesh(), ca, wire, 1)
		if err != nil {
			b.Fatal(err)
		}
		if eps != int(total) {
			b.Fatalf("the hub holds %d endpoints, want %d", eps, int(total))
		}
		loaded, err := loadedSetBytes(path)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(published)/total, "bytes/endpoint")
		b.ReportMetric(float64(loaded)/total, "loaded-bytes/endpoint")
		b.ReportMetric(float64(int64(after)-int64(before))/total, "process-bytes/endpoint")
		b.Logf("hub set: %.1f MiB for %d endpoints as published (%.0f B/endpoint), %.1f MiB as loaded from its file (%.0f B/endpoint); whole process (hub + %d members): +%.1f MiB",
			fedtest.MiB(published), int(total), float64(published)/total, fedtest.MiB(loaded), float64(loaded)/total, clusters, fedtest.MiB(after-before))
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
			bm.StopHub()
			stops = append(stops, time.Since(start))
			bm.waitFor(30*time.Second, "every member to lose the hub stream", func() bool {
				return bm.countSynced() == 0
			})
			if down > 0 {
				outage := time.NewTimer(down)
				<-outage.C
			}
			start = time.Now()
			bm.StartHub()
			readies = append(readies, time.Since(start))
			bm.waitFor(60*time.Second, "every member to resync", func() bool {
				return bm.countSynced() == clusters
			})
			syncs = append(syncs, time.Since(start))
			if got := len(bm.hubSlices()); got != clusters {
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
		open, load, err := timeLoad(filepath.Join(bm.Dir, "hub", hub.StoreFile))
		if err != nil {
			b.Fatal(err)
		}
		r, s, st := fedtest.Summarize(readies), fedtest.Summarize(syncs), fedtest.Summarize(stops)
		b.ReportMetric(fedtest.Ms(s.Max), "resync-ms")
		b.ReportMetric(fedtest.Ms(s.P50), "resync-p50-ms")
		b.ReportMetric(fedtest.Ms(r.Max), "ready-ms")
		b.ReportMetric(fedtest.Ms(st.Max), "stop-ms")
		b.ReportMetric(fedtest.Ms(open+load), "open+load-ms")
		b.ReportMetric(fedtest.Ms(afterOutage), "resync-after-outage-ms")
		b.Logf("%d restarts: ready %v, all synced %v, stop %v; after a %s outage all synced in %s; opening the store takes %s and loading its records %s",
			restarts, readies, syncs, stops, outage, afterOutage, open, load)
	}
}

// applyRecorder collects, for every change, when each other member applied it.
type applyRecorder struct {
	mu      sync.Mutex // guards the fields below
	changes map[int]*pendingChange
	// byService lists the changes of each owner's service, oldest first,
	// for those expected with expectChange.
	byService map[string][]int
	lags      []time.Duration
	samples   []applySample
	missing   int
	done      chan struct{} // closed when nothing is missing
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
	service string // its hostname, if a later change of it applies it too
	start   time.Time
	only    map[string]bool // the receivers measured; nil for any
	applied map[string]bool // receivers that applied it
	waiting int             // receivers that have not
}

func newApplyRecorder() *applyRecorder {
	return &applyRecorder{changes: make(map[int]*pendingChange), byService: make(map[string][]int)}
}

func (r *applyRecorder) expect(seq int, owner string, receivers int) {
	r.expectFrom(seq, owner, receivers, nil)
}

// expectFrom is expect measuring only the receivers listed, when only is
// not nil.
func (r *applyRecorder) expectFrom(seq int, owner string, receivers int, only map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes[seq] = &pendingChange{owner: owner, start: time.Now(), only: only, applied: make(map[string]bool), waiting: receivers}
	r.missing += receivers
}

// expectChange is expectFrom for a change of one service that builds on
// its earlier changes (fedtest.ChangeService): an importer that applies a
// later change of the service has applied this one too, even if it never
// saw this one's version. The owner's publish sends only the newest record
// of a service, so a change followed closely by another of the same
// service reaches no importer under its own number.
func (r *applyRecorder) expectChange(seq int, owner, service string, receivers int, only map[string]bool) {
	r.expectFrom(seq, owner, receivers, only)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes[seq].service = service
	key := owner + "/" + service
	r.byService[key] = append(r.byService[key], seq)
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
		if c == nil || c.owner != rec.GetCluster() {
			continue
		}
		r.appliedLocked(seq, c, cluster, now)
		if c.service == "" {
			continue
		}
		for _, earlier := range r.byService[c.owner+"/"+c.service] {
			if earlier < seq {
				r.appliedLocked(earlier, r.changes[earlier], cluster, now)
			}
		}
	}
	if r.missing == 0 && r.done != nil {
		close(r.done)
		r.done = nil
	}
}

// appliedLocked records change seq applied by cluster now, unless it was
// already or is not measured there.
func (r *applyRecorder) appliedLocked(seq int, c *pendingChange, cluster string, now time.Time) {
	if c.applied[cluster] || c.waiting == 0 || c.only != nil && !c.only[cluster] {
		return
	}
	c.applied[cluster] = true
	c.waiting--
	r.missing--
	r.lags = append(r.lags, now.Sub(c.start))
	r.samples = append(r.samples, applySample{seq: seq, owner: c.owner, receiver: cluster, lag: now.Sub(c.start)})
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

// storedRecords returns the records in a stopped hub's file as they were
// published: the hub stores each signed record in wire form.
func storedRecords(path string) ([][]byte, error) {
	st, err := store.Open(path)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var wire [][]byte
	err = st.ForEach(store.BucketRecords, func(_ string, value []byte) error {
		wire = append(wire, value)
		return nil
	})
	return wire, err
}

// publishedSetBytes is the heap a fresh registry.Set holds after the hub's
// Publish path (decode from the wire, verify, apply) took in wire, and the
// endpoints it counts. It builds copies sets, and divides: a process that
// has just stopped a federation with a heap of hundreds of megabytes frees
// a megabyte here or there while a 2 MB set is measured, and 5 copies
// make that noise a fifth. held is what the heap loses when the sets are
// dropped; grew, what it gained while they were built. They agree in a
// quiet process; grew read low (16 B per endpoint for 12 clusters, against
// some 200) when what the stopped federation left behind was still being
// freed meanwhile.
//
// FEDERATE_SCALE_HEAPPROFILE=path writes a heap profile there once the
// sets are built, with every allocation of the build sampled, to check the
// figure against: go tool pprof -sample_index=inuse_space -top
// -focus=publishedSetBytes path (divided by copies).
func publishedSetBytes(mesh string, ca []*x509.Certificate, wire [][]byte, copies int) (held uint64, grew int64, eps int, err error) {
	verifier := registry.NewVerifier(mesh, ca)
	profile := os.Getenv("FEDERATE_SCALE_HEAPPROFILE")
	if profile != "" {
		rate := runtime.MemProfileRate
		runtime.MemProfileRate = 1
		defer func() { runtime.MemProfileRate = rate }()
	}
	before := fedtest.HeapBytes()
	sets := make([]*registry.Set, copies)
	for i := range sets {
		if sets[i], err = buildPublishedSet(verifier, wire); err != nil {
			return 0, 0, 0, err
		}
	}
	with := fedtest.HeapBytes()
	if profile != "" {
		if err := writeHeapProfile(profile); err != nil {
			return 0, 0, 0, err
		}
	}
	for _, s := range sets[0].Summaries() {
		eps += s.Endpoints
	}
	runtime.KeepAlive(sets) // and not beyond: the sets are garbage from here
	without := fedtest.HeapBytes()
	runtime.KeepAlive(verifier)
	runtime.KeepAlive(wire)
	if with > without {
		held = (with - without) / uint64(copies)
	}
	return held, (int64(with) - int64(before)) / int64(copies), eps, nil
}

// buildPublishedSet takes in wire as the hub's Publish path does.
func buildPublishedSet(verifier *registry.Verifier, wire [][]byte) (*registry.Set, error) {
	set := registry.NewSet(false)
	for _, b := range wire {
		sr := new(registrypb.SignedRecord)
		if err := proto.Unmarshal(b, sr); err != nil {
			return nil, err
		}
		rec, err := verifier.Verify(sr)
		if err != nil {
			return nil, err
		}
		set.Apply([]registry.Verified{{Record: rec, Signed: sr}})
	}
	return set, nil
}

// writeHeapProfile writes the heap profile as of the last collection.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// loadHubSet reads a stopped hub's records into a fresh set as the hub
// does when it starts (hub.Server's loadRecords): decode without verifying,
// share each signer's certificate, apply at once.
func loadHubSet(st *store.Store) (*registry.Set, error) {
	recs, err := store.LoadRecords(st)
	if err != nil {
		return nil, err
	}
	set := registry.NewSet(false)
	set.Apply(recs)
	return set, nil
}

// loadedSetBytes is the heap a hub's set holds after reading the stopped
// hub's file.
func loadedSetBytes(path string) (uint64, error) {
	st, err := store.Open(path)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	before := fedtest.HeapBytes()
	set, err := loadHubSet(st)
	if err != nil {
		return 0, err
	}
	after := fedtest.HeapBytes()
	runtime.KeepAlive(set)
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
	_, err = loadHubSet(st)
	return open, time.Since(start), err
}
