package hub_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// A publish of several etcd transactions reads the cluster's records once
// and checks every put against that read: replica 0, which has not seen
// the newer versions replica 1 stored of some keys (its watch held), is
// sent 250 records at an older version of those keys; etcd keeps the
// newer ones, stores the rest, and replica 0 ends with each key at its
// highest version. A key under the cluster's prefix that holds no record
// is refused by name, with nothing written over it.
func TestHALargePublishKeepsWhatEtcdHoldsNewer(t *testing.T) {
	const n = 250 // three transactions of etcdMaxOps
	h := newHAMesh(t, 2)
	h.Join("east")
	ctx := fedtest.DeadlineContext(t, 2*time.Minute)
	cred := h.ClusterCredential(t, "east")
	on := []hubpb.HubClient{h.dialAs("east", 0), h.dialAs("east", 1)}
	svcs := make([]*registry.Service, n)
	for i := range svcs {
		svcs[i] = fedtest.CoffeeService("east", fmt.Sprintf("svc%03d", i), 1+i%5, 18080)
	}
	sign := func(svc *registry.Service, counter uint64) *registrypb.SignedRecord {
		return fedtest.SignWith(t, cred, fedtest.ServiceRecord("east", svc, 5, counter))
	}
	release := h.Replicas[0].HoldWatch()
	// Replica 1 stores every tenth key at 5.900, spread over the chunks.
	var newer []*registrypb.SignedRecord
	for i := 0; i < n; i += 10 {
		newer = append(newer, sign(svcs[i], 900))
	}
	publish(ctx, t, on[1], newer...)
	var older []*registrypb.SignedRecord
	for i, s := range svcs {
		older = append(older, sign(s, uint64(100+i)))
	}
	publish(ctx, t, on[0], older...)
	for i, s := range svcs {
		want := &registry.Version{Incarnation: 5, Counter: uint64(100 + i)}
		if i%10 == 0 {
			want.Counter = 900
		}
		if v := h.storedVersion(ctx, h.recordKey("east", s.GetHostname())); registry.Compare(v, want) != 0 {
			t.Fatalf("etcd holds %s at %s, want %s", s.GetHostname(), registry.FormatVersion(v), registry.FormatVersion(want))
		}
	}
	release()
	top := &registry.Version{Incarnation: 5, Counter: 900}
	fedtest.Eventually(t, 10*time.Second, "replica 0 learns the newer versions by its watch", func() bool {
		return registry.Compare(h.Replicas[0].SliceVersion("east"), top) == 0
	})

	// A corrupt value at a key the next large publish writes.
	bad := h.recordKey("east", svcs[125].GetHostname())
	if _, err := h.etcd().Put(ctx, bad, "not a record"); err != nil {
		t.Fatal(err)
	}
	var again []*registrypb.SignedRecord
	for _, s := range svcs {
		again = append(again, sign(s, 1000))
	}
	_, err := on[0].Publish(ctx, &hubpb.PublishRequest{Records: again})
	if err == nil || !strings.Contains(err.Error(), "svc125") || !strings.Contains(err.Error(), "nothing was written over it") {
		t.Fatalf("publish over a corrupt key: %v, want it refused naming the key", err)
	}
	resp, err := h.etcd().Get(ctx, bad)
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "not a record" {
		t.Fatalf("the corrupt key was written over: %v %v", resp, err)
	}
}

// A member sends its whole slice again after a failed publish: the
// records the hub holds byte for byte are taken as they are, while a
// record among them that differs in anything, here its signature, is
// verified and refused, by its place in the publish, with the whole publish.
func TestResentSliceStillRefusesABadSignature(t *testing.T) {
	h := newHAMesh(t, 1)
	h.Join("east")
	ctx := fedtest.DeadlineContext(t, time.Minute)
	cred := h.ClusterCredential(t, "east")
	east := h.dialAs("east", 0)
	var recs []*registrypb.SignedRecord
	for _, s := range services("east", 20) {
		recs = append(recs, fedtest.SignWith(t, cred, fedtest.ServiceRecord("east", s, 5, 1)))
	}
	publish(ctx, t, east, recs...)
	publish(ctx, t, east, recs...) // resent as it is: accepted
	forged := proto.Clone(recs[7]).(*registrypb.SignedRecord)
	forged.Signature[len(forged.Signature)-1] ^= 1
	resent := append(append([]*registrypb.SignedRecord{}, recs[:7]...), append([]*registrypb.SignedRecord{forged}, recs[8:]...)...)
	_, err := east.Publish(ctx, &hubpb.PublishRequest{Records: resent})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "record 7") {
		t.Fatalf("a resent slice with one forged signature: %v, want InvalidArgument", err)
	}
	t.Logf("refused: %v", err)
}
