package member_test

import (
	"context"
	"testing"
	"time"

	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/registry"
)

// BenchmarkUpdateOneChanged measures Member.Update as a control plane
// calls it: its whole list of 1000 services of 10 endpoints, of which one
// changed since the last call. One real member with its bbolt store, which
// publishes every change to a real hub as it goes. Each iteration moves
// the next service to its changed form and back, so that every Update
// signs exactly one record; the run fails if it signed any other.
//
//	go test -run='^$' -bench='^BenchmarkUpdateOneChanged$' -benchmem ./member/
func BenchmarkUpdateOneChanged(b *testing.B) {
	const services, endpoints = 1000, 10
	bm := newBenchMesh(b, 1, nil)
	bm.load(services, endpoints, 2*time.Minute)
	bmem := bm.members[0]
	original := append([]*registry.Service(nil), bmem.services...)
	changed := make([]*registry.Service, services)
	for i, s := range original {
		changed[i] = fedtest.ChangeService(s, i+1)
	}
	list := append([]*registry.Service(nil), original...)
	info := fedtest.ClusterInfo(bmem.name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	before := bmem.member.Version(bmem.name)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		i := n % services
		if list[i] == original[i] {
			list[i] = changed[i]
		} else {
			list[i] = original[i]
		}
		n++
		if err := bmem.member.Update(ctx, info, list); err != nil {
			b.Fatal(err)
		}
	}
	after := bmem.member.Version(bmem.name)
	if signed := after.GetCounter() - before.GetCounter(); after.GetIncarnation() != before.GetIncarnation() || signed != uint64(n) {
		b.Fatalf("%d updates of one service each signed %d records (version %v -> %v)", n, signed, before, after)
	}
}
