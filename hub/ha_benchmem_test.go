package hub_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// BenchmarkHAReplicaMemory measures the heap one hub replica holds per
// endpoint with 20 clusters of 5000 endpoints (500 services of 10) in
// etcd. The replicas run in this process with etcd and the members, so a
// replica's share is measured in a quiet process: members and replicas
// stopped and the heap settled, a fourth replica is started on the
// loaded etcd, and the live heap's growth until it is ready (its records
// loaded from etcd, serving) is its cost. (Restarting a stopped replica
// instead would free the old one's memory as the new one takes its
// place, and read less than nothing.) The set alone (the records read
// from etcd into a registry.Set as a replica's start does) and the whole
// process's growth during the load are reported too.
func BenchmarkHAReplicaMemory(b *testing.B) {
	const (
		clusters   = 20
		services   = 500
		endpoints  = 10
		settleTime = 6 * time.Minute
	)
	for range b.N {
		b.Logf("load average at start: %s", loadAverage(b))
		hb := newHABench(b, clusters, nil)
		before := fedtest.HeapBytes()
		hb.load(services, endpoints, settleTime)
		process := int64(fedtest.HeapBytes()) - int64(before)
		total := float64(clusters * services * endpoints)

		hb.StopMembers()
		for i := range hb.Replicas {
			hb.StopReplica(i)
		}
		base := fedtest.WaitHeapSettled(b, time.Minute)
		fresh := len(hb.Replicas)
		hb.StartReplica(fresh)
		if got := len(hb.Replicas[fresh].SliceClusters()); got != clusters {
			b.Fatalf("a replica started with %d slices, want %d", got, clusters)
		}
		grown := int64(fedtest.HeapBytes()) - int64(base)
		ctx := fedtest.DeadlineContext(b, time.Minute)
		set, eps := hb.loadedSetBytes(ctx)
		if eps != int(total) {
			b.Fatalf("etcd holds %d endpoints, want %d", eps, int(total))
		}
		b.ReportMetric(float64(grown)/total, "replica-bytes/endpoint")
		b.ReportMetric(float64(set)/total, "set-bytes/endpoint")
		b.ReportMetric(float64(process)/total, "process-bytes/endpoint")
		b.Logf("a replica started on the loaded etcd: +%.1f MiB of heap (%.0f B/endpoint); its set alone %.1f MiB (%.0f B/endpoint); whole process (3 etcd members, 3 replicas, %d members) +%.1f MiB during the load; load average at end: %s",
			float64(grown)/(1<<20), float64(grown)/total, fedtest.MiB(set), float64(set)/total, clusters, float64(process)/(1<<20), loadAverage(b))
	}
}

// loadedSetBytes is the heap a fresh registry.Set holds after taking in
// every record in etcd the way a replica's start does (decoded, not
// verified again, each signer's certificate shared), and the endpoints
// it counts.
func (h *haMesh) loadedSetBytes(ctx context.Context) (uint64, int) {
	h.t.Helper()
	values := h.storedRecords(ctx)
	before := fedtest.HeapBytes()
	set := registry.NewSet(false)
	set.Apply(h.decodeRecords(values))
	after := fedtest.HeapBytes()
	eps := 0
	for _, s := range set.Summaries() {
		eps += s.Endpoints
	}
	runtime.KeepAlive(set)
	runtime.KeepAlive(values)
	return after - before, eps
}

// storedRecords returns every record in etcd, in wire form.
func (h *haMesh) storedRecords(ctx context.Context) [][]byte {
	h.t.Helper()
	resp, err := h.etcd().Get(ctx, hub.DefaultEtcdPrefix+store.BucketRecords+"/", clientv3.WithPrefix())
	if err != nil {
		h.t.Fatal(err)
	}
	values := make([][]byte, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		values[i] = kv.Value
	}
	return values
}

// decodeRecords decodes stored records as a replica's start does.
func (h *haMesh) decodeRecords(values [][]byte) []registry.Verified {
	h.t.Helper()
	signers := make(registry.SignerCache)
	recs := make([]registry.Verified, 0, len(values))
	for _, v := range values {
		sr, rec := new(registrypb.SignedRecord), new(registrypb.Record)
		if err := proto.Unmarshal(v, sr); err != nil {
			h.t.Fatal(err)
		}
		if err := proto.Unmarshal(sr.GetRecord(), rec); err != nil {
			h.t.Fatal(err)
		}
		signers.Intern(sr)
		recs = append(recs, registry.Verified{Record: rec, Signed: sr})
	}
	return recs
}
