package hub_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
)

// The benchmarks of docs/benchmarks.md, "Hub replicas on etcd": 3 hub
// replicas on a real 3-member etcd (internal/etcdtest, client mTLS) and
// real members, all in this process over loopback gRPC with mTLS. The
// workload, percentiles and metric names are those of the single hub's
// benchmarks in member/bench_test.go. Slow by nature, so run them once:
//
//	go test -run='^$' -bench=HA -benchtime=1x -timeout=30m ./hub/

// BenchmarkHAPropagation measures how long an endpoint change in one
// cluster takes to be applied by every other cluster when the clusters
// stream from 3 replicas: 10 clusters, 1000 services of 10 endpoints
// each, 200 changes at 20 per second in random clusters. A change that
// its owner published to one replica reaches the members of the others
// through etcd and their watches.
func BenchmarkHAPropagation(b *testing.B) {
	const (
		clusters   = 10
		services   = 1000
		endpoints  = 10
		changes    = 200
		perSecond  = 20
		settleTime = 3 * time.Minute
	)
	for range b.N {
		b.Logf("load average at start: %s", loadAverage(b))
		rec := fedtest.NewApplyRecorder()
		hb := newHABench(b, clusters, rec.OnApply)
		hb.load(services, endpoints, settleTime)
		rng := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(time.Second / perSecond)
		var updates []time.Duration
		b.ResetTimer()
		began := time.Now()
		for seq := 1; seq <= changes; seq++ {
			<-tick.C
			m := hb.members[rng.IntN(clusters)]
			i := rng.IntN(services)
			m.services[i] = fedtest.ChangeService(m.services[i], seq)
			rec.Expect(seq, m.name, clusters-1)
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := m.member.Update(ctx, fedtest.ClusterInfo(m.name), m.services)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			updates = append(updates, time.Since(start))
		}
		tick.Stop()
		rate := float64(changes) / time.Since(began).Seconds()
		lags, missing := rec.Wait(30 * time.Second)
		b.StopTimer()
		if missing > 0 {
			b.Fatalf("%d of %d applies never arrived", missing, changes*(clusters-1))
		}
		lat, upd := fedtest.Summarize(lags), fedtest.Summarize(updates)
		b.ReportMetric(fedtest.Ms(lat.P50), "p50-ms")
		b.ReportMetric(fedtest.Ms(lat.P99), "p99-ms")
		b.ReportMetric(fedtest.Ms(lat.Max), "max-ms")
		b.ReportMetric(fedtest.Ms(upd.P50), "update-p50-ms")
		b.ReportMetric(float64(len(lags)), "applies")
		b.ReportMetric(rate, "changes/s")
		b.Logf("propagation through 3 replicas over %d applies at %.1f changes/s: p50 %s p99 %s max %s; Member.Update p50 %s p99 %s; load average at end: %s",
			len(lags), rate, lat.P50, lat.P99, lat.Max, upd.P50, upd.P99, loadAverage(b))
	}
}

// BenchmarkHAFailover kills each replica in turn (its Run cancelled: its
// streams end at once, as in a crash) and measures, for every member that
// streamed from it, the gap from its stream ending until it is synced on
// another replica, and from the kill until the last of them is; then the
// replica starts again on its address. 9 clusters of 100 services.
func BenchmarkHAFailover(b *testing.B) {
	const (
		clusters   = 9
		services   = 100
		endpoints  = 10
		settleTime = 2 * time.Minute
	)
	for range b.N {
		b.Logf("load average at start: %s", loadAverage(b))
		hb := newHABench(b, clusters, nil)
		hb.load(services, endpoints, settleTime)
		var gaps, kills []time.Duration
		moved := 0
		b.ResetTimer()
		for k := range hb.Replicas {
			victims := hb.streamingFrom(k)
			if len(victims) == 0 {
				b.Fatalf("no member streams from replica %d: %v", k, hb.spread())
			}
			g, kill := hb.killAndWatch(k, victims)
			gaps, kills, moved = append(gaps, g...), append(kills, kill), moved+len(victims)
			hb.RestartReplica(k)
		}
		b.StopTimer()
		hb.waitConverged(time.Minute, "every slice everywhere after the failovers")
		gap, kill := fedtest.Summarize(gaps), fedtest.Summarize(kills)
		b.ReportMetric(fedtest.Ms(gap.P50), "gap-p50-ms")
		b.ReportMetric(fedtest.Ms(gap.Max), "gap-max-ms")
		b.ReportMetric(fedtest.Ms(kill.Max), "failover-ms")
		b.ReportMetric(float64(moved), "members-moved")
		b.Logf("%d members moved off 3 killed replicas: stream gaps %v, kill to the last one synced %v; now streaming from each replica: %v; load average at end: %s",
			moved, gaps, kills, hb.spread(), loadAverage(b))
	}
}

// killAndWatch stops replica k while sampling its members every 2 ms; it
// returns each one's gap (stream not synced until synced on another
// replica) and the time from the kill until the last was synced. A member
// is synced on another replica once a survivor holds its stream and it is
// synced (it registers a new stream only after letting go of the old). A
// sampler starved of CPU may miss a short gap: it then counts from the
// kill, an upper bound.
func (hb *haBench) killAndWatch(k int, victims []*haBenchMember) ([]time.Duration, time.Duration) {
	lost := make([]time.Time, len(victims))
	gaps := make([]time.Duration, len(victims))
	var survivors []*hub.Server
	for i, r := range hb.Replicas {
		if i != k && hb.running(i) {
			survivors = append(survivors, r)
		}
	}
	moved := func(m *haBenchMember) bool {
		for _, r := range survivors {
			if r.SubscribersOf(m.name) > 0 {
				return true
			}
		}
		return false
	}
	var wg sync.WaitGroup
	start := time.Now()
	var last time.Duration
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		deadline := time.Now().Add(30 * time.Second)
		for left := len(victims); left > 0 && time.Now().Before(deadline); {
			<-tick.C
			now := time.Now()
			for i, m := range victims {
				synced := m.member.HubStreamSynced()
				switch {
				case gaps[i] != 0:
				case !synced && lost[i].IsZero():
					lost[i] = now
				case synced && moved(m):
					if lost[i].IsZero() {
						lost[i] = start
					}
					gaps[i], last = now.Sub(lost[i]), now.Sub(start)
					left--
				}
			}
		}
	})
	hb.StopReplica(k)
	wg.Wait()
	for i, g := range gaps {
		if g == 0 {
			hb.tb.Fatalf("%s, on replica %d, was not synced on another replica within 30 s of its death", victims[i].name, k)
		}
	}
	return gaps, last
}

// BenchmarkHAResync stops all 3 replicas, starts them again at once on
// their addresses and data, and measures the time from their start until
// all are ready (each has read every record from etcd) and until every
// member is synced again (its new stream's backlog applied) and every
// member and replica holds every owner's version: 20 clusters of 5000
// endpoints, three restarts.
func BenchmarkHAResync(b *testing.B) {
	const (
		clusters   = 20
		services   = 500
		endpoints  = 10
		restarts   = 3
		settleTime = 6 * time.Minute
	)
	for range b.N {
		b.Logf("load average at start: %s", loadAverage(b))
		hb := newHABench(b, clusters, nil)
		hb.load(services, endpoints, settleTime)
		var readies, syncs, afterReady []time.Duration
		b.ResetTimer()
		for range restarts {
			for i := range hb.Replicas {
				hb.StopReplica(i)
			}
			fedtest.WaitFor(b, 30*time.Second, "every member to lose its hub stream", func() bool { return hb.countSynced() == 0 })
			start := time.Now()
			hb.RestartReplicas()
			ready := time.Since(start)
			hb.waitConverged(time.Minute, "every member to resync")
			readies, syncs, afterReady = append(readies, ready), append(syncs, time.Since(start)), append(afterReady, time.Since(start)-ready)
			b.Logf("restart: 3 replicas ready in %s, every member synced in %s; streaming from each: %v", ready, time.Since(start), hb.spread())
		}
		b.StopTimer()
		r, s, a := fedtest.Summarize(readies), fedtest.Summarize(syncs), fedtest.Summarize(afterReady)
		b.ReportMetric(fedtest.Ms(s.Max), "resync-ms")
		b.ReportMetric(fedtest.Ms(s.P50), "resync-p50-ms")
		b.ReportMetric(fedtest.Ms(r.Max), "ready-ms")
		b.ReportMetric(fedtest.Ms(a.Max), "resync-after-ready-ms")
		b.Logf("%d restarts of all replicas: ready %v, all synced %v; load average at end: %s", restarts, readies, syncs, loadAverage(b))
	}
}
