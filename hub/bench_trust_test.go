package hub

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// BenchmarkBundlePropagation measures how long a new root takes to reach
// every other member: 10 clusters, each in turn adds a root (the first step
// of a rotation), and the time until every other member's bundle set holds
// the new sequence is recorded.
func BenchmarkBundlePropagation(b *testing.B) {
	const clusters = 10
	for range b.N {
		bm := newBenchMesh(b, clusters, nil)
		bm.load(1, 1, time.Minute)
		var lags []time.Duration
		b.ResetTimer()
		for _, owner := range bm.members {
			td := spiffeid.RequireTrustDomainFromString(owner.member.cfg.TrustDomain)
			want := owner.member.Authority().Status().Sequence + 1
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := owner.member.startRotation(ctx); err != nil {
				cancel()
				b.Fatal(err)
			}
			cancel()
			bm.waitFor(10*time.Second, "new root everywhere", func() bool {
				for _, m := range bm.members {
					if seq, _ := m.member.Bundles().Sequence(td); seq < want {
						return false
					}
				}
				seq, _ := bm.hub.Bundles().Sequence(td)
				return seq >= want
			})
			lags = append(lags, time.Since(start))
		}
		b.StopTimer()
		slices.Sort(lags)
		b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lags[len(lags)-1].Microseconds())/1000, "max-ms")
		b.Logf("bundle propagation to %d members and the hub, %d rotations: %v", clusters-1, len(lags), lags)
		bm.stop()
	}
}
