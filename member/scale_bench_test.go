package member_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/trust"
)

// The federation of BenchmarkScale100: 100 clusters of 10 services with 10
// endpoints each (1,000 services, 10,000 endpoints), in which each cluster
// imports the first 5 services of each of the next 10 clusters (scoped
// import: the hub sends it those 50 services and every cluster's info).
const (
	scaleServices    = 10
	scaleEndpoints   = 10
	scaleImportFrom  = 10
	scaleImportEach  = 5
	scaleChanges     = 400
	scaleChangesRate = 20 // per second
	// scaleIdleShare is the share of a CPU per member above which the
	// process is not yet quiet after the load.
	scaleIdleShare = 0.005
	// scaleSetCopies is how many copies of the hub's set are measured.
	scaleSetCopies = 5
)

// scaleClusters is 100; FEDERATE_SCALE_CLUSTERS runs fewer (at least 11)
// when the machine cannot hold 100 members, and the benchmark says so.
// FEDERATE_SCALE_IMPORT_ALL=1 makes every cluster import every service,
// as before scoped import, for comparison.
var scaleClusters = scaleSize()

func scaleSize() int {
	n, err := strconv.Atoi(os.Getenv("FEDERATE_SCALE_CLUSTERS"))
	if err != nil || n <= scaleImportFrom {
		return 100
	}
	return n
}

// scaleTimers mark a silent cluster down after 2 seconds, so that the
// benchmark can time dead detection.
var scaleTimers = gossip.Timers{StaleAfter: 2 * time.Second, DeadAfter: time.Minute, ExpireAfter: time.Hour}

// scaleServiceName names service si of cluster ci, so that the
// federation has 1,000 distinct services.
func scaleServiceName(ci, si int) string { return fmt.Sprintf("svc-%02d-%02d", ci, si) }

// scaleImports returns the hostnames cluster ci imports: the first
// scaleImportEach services of each of the scaleImportFrom clusters after it.
func scaleImports(ci int) []string {
	var out []string
	for k := 1; k <= scaleImportFrom; k++ {
		for si := range scaleImportEach {
			out = append(out, scaleServiceName((ci+k)%scaleClusters, si)+".bench.svc.cluster.local")
		}
	}
	return out
}

// importersOf returns the clusters that import the services of cluster
// owner: the scaleImportFrom clusters before it.
func importersOf(owner int) map[string]bool {
	out := make(map[string]bool, scaleImportFrom)
	for k := 1; k <= scaleImportFrom; k++ {
		out[fmt.Sprintf("c%02d", (owner-k+scaleClusters)%scaleClusters)] = true
	}
	return out
}

// BenchmarkScale100 runs 100 clusters in this process with real gRPC over
// mTLS, memberlist over the real transport and one bbolt file each. It
// reports the time from the first member's start until every member holds
// every slice's version (the 50 services it imports and every cluster's
// info) and sees every cluster alive (converge-s); how long a change
// of an imported service takes to be applied in every cluster importing it
// at 20 changes/s (p50-ms, p99-ms); the hub's heap per endpoint; the heap
// per member; and the time from one member stopping until every other
// marks it down (dead-detect-s).
//
//	go test -run='^$' -bench='Scale100$' -benchtime=1x -timeout=30m ./member/
func BenchmarkScale100(b *testing.B) {
	raiseOpenFiles(b, openFiles(scaleClusters))
	for range b.N {
		rec := newApplyRecorder()
		before := fedtest.HeapBytes()
		start := time.Now()
		bm := newBenchMeshConfigured(b, scaleClusters, scaleTimers, rec.onApply, func(i int, c *member.Config) {
			if os.Getenv("FEDERATE_SCALE_IMPORT_ALL") == "" {
				c.Imports = registry.NewScope(scaleImports(i))
			}
			c.Gossip.Seeds = joinSeeds(b, c)
		})
		bm.serviceName = scaleServiceName
		// Idle, every member heartbeats every other each second: about
		// 0.3 of a CPU for 100 members on this machine.
		bm.quietShare = max(0.1, scaleIdleShare*float64(scaleClusters))
		bm.load(scaleServices, scaleEndpoints, 5*time.Minute)
		bm.waitFor(2*time.Minute, "every cluster alive everywhere", bm.allAlive)
		converge := time.Since(start)
		processBytes := fedtest.HeapBytes() - before

		b.ResetTimer()
		lags, rate := bm.scaleChanges(b, rec)
		dead := bm.timeDeadDetection(b)
		b.StopTimer()

		hubBytes := bm.hubSetBytes(b)
		endpoints := float64(scaleClusters * scaleServices * scaleEndpoints)
		lat := fedtest.Summarize(lags)
		b.ReportMetric(fedtest.Ms(lat.P50), "p50-ms")
		b.ReportMetric(fedtest.Ms(lat.P99), "p99-ms")
		b.ReportMetric(float64(hubBytes)/endpoints, "hub-bytes/endpoint")
		b.ReportMetric(float64(int64(processBytes)-int64(hubBytes))/float64(scaleClusters), "member-bytes")
		b.ReportMetric(converge.Seconds(), "converge-s")
		b.ReportMetric(dead.Seconds(), "dead-detect-s")
		b.Logf("%d clusters converged in %s; %d applies at %.1f changes/s: p50 %s p99 %s max %s (slowest %v); hub %.1f MiB, process %.1f MiB; a stopped cluster down everywhere in %s",
			scaleClusters, converge.Round(time.Millisecond), len(lags), rate, lat.P50, lat.P99, lat.Max, rec.slowest(3),
			fedtest.MiB(hubBytes), fedtest.MiB(processBytes), dead.Round(time.Millisecond))
	}
}

// joinSeeds are the gossip seeds the hub gave cluster when it joined (the
// hub and up to 7 members), as a control plane uses them. The harness
// adds every running member, which suits a few clusters; here it made
// each new member join every earlier one, 5,000 push/pulls with a TLS
// handshake each for 100 clusters, and as many again once its hub stream
// synced (a synced member rejoins all its seeds).
func joinSeeds(b *testing.B, c *member.Config) []string {
	ms, err := membership.LoadMembership(filepath.Dir(c.CredentialPath))
	if err != nil {
		b.Fatal(err)
	}
	return ms.GossipSeeds
}

// scaleChanges changes imported services of random clusters at
// scaleChangesRate and returns how long each change took to be applied by
// each importer, with the rate reached.
func (bm *benchMesh) scaleChanges(b *testing.B, rec *applyRecorder) ([]time.Duration, float64) {
	rng := rand.New(rand.NewPCG(1, 2))
	tick := time.NewTicker(time.Second / scaleChangesRate)
	defer tick.Stop()
	began := time.Now()
	for seq := 1; seq <= scaleChanges; seq++ {
		<-tick.C
		owner := rng.IntN(scaleClusters)
		bmem := bm.members[owner]
		i := rng.IntN(scaleImportEach)
		bmem.services[i] = fedtest.ChangeService(bmem.services[i], seq)
		rec.expectChange(seq, bmem.name, bmem.services[i].GetHostname(), scaleImportFrom, importersOf(owner))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := bmem.member.Update(ctx, fedtest.ClusterInfo(bmem.name), bmem.services)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
	rate := float64(scaleChanges) / time.Since(began).Seconds()
	lags, missing := rec.wait(30 * time.Second)
	if missing > 0 {
		b.Fatalf("%d of %d applies never arrived", missing, scaleChanges*scaleImportFrom)
	}
	return lags, rate
}

// timeDeadDetection stops the last member and times until every other
// marks it down.
func (bm *benchMesh) timeDeadDetection(b *testing.B) time.Duration {
	gone := bm.members[len(bm.members)-1]
	start := time.Now()
	bm.StopMember(gone.name)
	bm.waitFor(time.Minute, gone.name+" down everywhere", func() bool {
		for _, m := range bm.members[:len(bm.members)-1] {
			if !m.member.ClusterDown(gone.name) {
				return false
			}
		}
		return true
	})
	return time.Since(start)
}

// allAlive reports whether every member sees every other cluster up.
func (bm *benchMesh) allAlive() bool {
	for _, m := range bm.members {
		for _, other := range bm.members {
			if other != m && m.member.ClusterDown(other.name) {
				return false
			}
		}
	}
	return true
}

// hubSetBytes stops the federation and measures the heap of the hub's
// records as the hub holds them after Publish.
func (bm *benchMesh) hubSetBytes(b *testing.B) uint64 {
	bm.stop()
	wire, err := storedRecords(filepath.Join(bm.Dir, "hub", hub.StoreFile))
	if err != nil {
		b.Fatal(err)
	}
	ca, err := trust.LoadCertificates(filepath.Join(bm.Dir, "hub", membership.CAFile))
	if err != nil {
		b.Fatal(err)
	}
	fedtest.WaitHeapSettled(bm.tb, time.Minute)
	held, grew, eps, err := publishedSetBytes(bm.members[0].member.Mesh(), ca, wire, scaleSetCopies)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("hub set: %d B when dropped, %d B grown while built (%d records; mean of %d copies)", held, grew, len(wire), scaleSetCopies)
	if want := scaleClusters * scaleServices * scaleEndpoints; eps != want {
		b.Fatalf("the hub holds %d endpoints, want %d", eps, want)
	}
	return held
}

// openFiles is about what n clusters in this process hold open: one
// gossip packet connection between each pair of members (both ends of it
// in this process; a pair held two before they were duplex), and some
// more per cluster for its hub stream, peer fetches, gossip streams,
// listeners and bbolt file.
func openFiles(n int) uint64 { return uint64(n * (n - 1 + 60)) }

// raiseOpenFiles raises this process's open-file limit to need, as far as
// the hard limit (or, as root, the kernel) allows, and stops the benchmark
// with what to run when it cannot.
func raiseOpenFiles(b *testing.B, need uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= need {
		return
	}
	want := syscall.Rlimit{Cur: need, Max: max(lim.Max, need)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		b.Fatalf("%d clusters need about %d open files; the limit is %d and cannot be raised (%v): run 'ulimit -n %d' first, or fewer clusters with FEDERATE_SCALE_CLUSTERS",
			scaleClusters, need, lim.Cur, err, need)
	}
}
