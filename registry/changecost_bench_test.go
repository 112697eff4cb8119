package registry_test

import (
	"fmt"
	"testing"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// costClusters is how many clusters BenchmarkChangeCost spreads its
// services over.
const costClusters = 10

// costRecord is service i's record at counter, with ten endpoints.
func costRecord(i int, counter uint64) registry.Verified {
	svc := &registry.Service{Hostname: fmt.Sprintf("svc%d.shop.svc.cluster.local", i), Namespace: "shop", Name: fmt.Sprintf("svc%d", i)}
	for e := range 10 {
		svc.Endpoints = append(svc.Endpoints, &registry.Endpoint{Address: fmt.Sprintf("10.%d.%d.%d", i/250, i%250, e+int(counter%200)), Network: "n"})
	}
	rec := &registry.Record{
		Cluster: fmt.Sprintf("c%d", i%costClusters), Key: svc.GetHostname(),
		Version: &registry.Version{Incarnation: 1, Counter: counter},
		Body:    &registrypb.Record_Service{Service: svc},
	}
	return registry.Verified{Record: rec, Signed: &registrypb.SignedRecord{}}
}

// BenchmarkChangeCost measures what one received record costs a member's
// registry as the federation grows (services of ten endpoints over ten
// clusters): taking it in (Newer, then Apply) and what a control plane
// then reads of the view to rebuild, every cluster's summary and
// services.
func BenchmarkChangeCost(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			set := registry.NewSet(true)
			var all []registry.Verified
			for i := range n {
				all = append(all, costRecord(i, 1))
			}
			set.Apply(all)
			counters := make([]uint64, n)
			for i := range counters {
				counters[i] = 1
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				changed := i % n
				counters[changed] += costClusters * uint64(n) // newer than any record of its cluster
				rec := []registry.Verified{costRecord(changed, counters[changed])}
				if len(set.Apply(set.Newer(rec))) != 1 {
					b.Fatal("the change was not applied")
				}
				for _, sum := range set.Summaries() {
					_ = set.Services(sum.Cluster)
				}
			}
		})
	}
}
