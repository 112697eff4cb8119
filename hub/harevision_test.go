package hub_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// A replica that has not yet seen a record's newer version (its etcd
// watch held, as in a partition) is sent an older one: etcd keeps the
// newer, the replica does not apply or relay the older, and once its
// watch resumes it holds the newer. A record of an older incarnation is
// refused the same way for a key the newer incarnation dropped.
func TestHAOlderVersionNeverReplacesNewer(t *testing.T) {
	h := newHAMesh(t, 2)
	h.Join("east")
	h.Join("west")
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	cred := h.ClusterCredential(t, "east")
	on := []hubpb.HubClient{h.dialAs("east", 0), h.dialAs("east", 1)}
	west := h.subscribe("west", h.Addr(1), nil)
	fedtest.Eventually(t, 10*time.Second, "west's stream on replica 1 synced", west.isSynced)
	release := h.Replicas[1].HoldWatch()

	order := fedtest.CoffeeService("east", "order", 2, 18080)
	newer := fedtest.SignWith(t, cred, fedtest.ServiceRecord("east", order, 5, 7))
	older := fedtest.SignWith(t, cred, fedtest.ServiceRecord("east", order, 5, 3))
	publish(ctx, t, on[0], newer)
	publish(ctx, t, on[1], older)
	key := h.recordKey("east", order.GetHostname())
	v57 := &registry.Version{Incarnation: 5, Counter: 7}
	if v := h.storedVersion(ctx, key); registry.Compare(v, v57) != 0 {
		t.Fatalf("etcd holds east's order at %s after the older 5.3 was published to replica 1, want the newer 5.7", registry.FormatVersion(v))
	}
	if v := h.Replicas[1].SliceVersion("east"); v != nil {
		t.Errorf("replica 1 applied east at %s, although etcd refused it", registry.FormatVersion(v))
	}
	if west.has("east", order.GetHostname()) {
		t.Errorf("replica 1 relayed the refused 5.3 to west")
	}
	release()
	fedtest.Eventually(t, 10*time.Second, "replica 1 learns 5.7 by its watch and relays it", func() bool {
		return registry.Compare(h.Replicas[1].SliceVersion("east"), v57) == 0 && registry.Compare(west.version("east"), v57) == 0
	})

	// Incarnation 6 on replica 0 drops order; replica 1, its watch held
	// again, is sent order at incarnation 5, which etcd no longer holds.
	release = h.Replicas[1].HoldWatch()
	payment := fedtest.CoffeeService("east", "payment", 1, 18080)
	publish(ctx, t, on[0], fedtest.SignWith(t, cred, fedtest.ServiceRecord("east", payment, 6, 1)))
	if v := h.storedVersion(ctx, key); v != nil {
		t.Fatalf("etcd still holds east's order at %s after incarnation 6", registry.FormatVersion(v))
	}
	publish(ctx, t, on[1], fedtest.SignWith(t, cred, fedtest.ServiceRecord("east", order, 5, 9)))
	if v := h.storedVersion(ctx, key); v != nil {
		t.Fatalf("etcd holds east's order at %s of incarnation 5 after incarnation 6 replaced it", registry.FormatVersion(v))
	}
	release()
	fedtest.Eventually(t, 10*time.Second, "both replicas hold east at 6.1", func() bool {
		return registry.Compare(h.Replicas[0].SliceVersion("east"), &registry.Version{Incarnation: 6, Counter: 1}) == 0 &&
			registry.Compare(h.Replicas[1].SliceVersion("east"), &registry.Version{Incarnation: 6, Counter: 1}) == 0
	})
}

// Writers on two replicas that do not see each other's writes (both
// watches held) publish 120 versions of three records at once, the odd
// ones to one replica and the even ones to the other, each in increasing
// order: both replicas take every one as new, so their writes to etcd
// race. Each key ends in etcd at the highest version, and its history in
// etcd only ever went up: a write that lost the race was not made.
func TestHAConcurrentWritersEndWithTheHighestVersion(t *testing.T) {
	const versions = 120
	h := newHAMesh(t, 2)
	h.Join("east")
	ctx := fedtest.DeadlineContext(t, 2*time.Minute)
	cred := h.ClusterCredential(t, "east")
	on := []hubpb.HubClient{h.dialAs("east", 0), h.dialAs("east", 1)}
	svcs := services("east", 3)
	signed := make([][]*registrypb.SignedRecord, versions+1)
	for c := 1; c <= versions; c++ {
		for _, s := range svcs {
			signed[c] = append(signed[c], fedtest.SignWith(t, cred, fedtest.ServiceRecord("east", s, 5, uint64(c))))
		}
	}
	start := h.etcdRevision(ctx)
	for _, r := range h.Replicas {
		release := r.HoldWatch()
		defer release()
	}
	var wg sync.WaitGroup
	for w := range on {
		wg.Go(func() {
			for c := w + 1; c <= versions; c += len(on) {
				if _, err := on[w].Publish(ctx, &hubpb.PublishRequest{Records: signed[c]}); err != nil {
					t.Errorf("publish of version 5.%d to replica %d: %v", c, w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	top := &registry.Version{Incarnation: 5, Counter: versions}
	for _, s := range svcs {
		key := h.recordKey("east", s.GetHostname())
		if v := h.storedVersion(ctx, key); registry.Compare(v, top) != 0 {
			t.Errorf("etcd holds %s at %s, want the highest %s", s.GetHostname(), registry.FormatVersion(v), registry.FormatVersion(top))
		}
		history := h.storedHistory(ctx, key, start)
		for i := 1; i < len(history); i++ {
			if registry.Compare(history[i], history[i-1]) <= 0 {
				t.Errorf("%s went from %s to %s in etcd", s.GetHostname(), registry.FormatVersion(history[i-1]), registry.FormatVersion(history[i]))
			}
		}
		t.Logf("%s: %d writes reached etcd of %d versions published", s.GetHostname(), len(history), versions)
	}
}

// dialAs is a Hub client on replica i as a joined cluster.
func (h *haMesh) dialAs(cluster string, i int) hubpb.HubClient {
	h.t.Helper()
	conn, err := membership.Dial(h.Addr(i), filepath.Join(h.Dir, cluster, membership.CredentialFile), filepath.Join(h.Dir, cluster, membership.CAFile))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	return hubpb.NewHubClient(conn)
}

func publish(ctx context.Context, t *testing.T, c hubpb.HubClient, recs ...*registrypb.SignedRecord) {
	t.Helper()
	if _, err := c.Publish(ctx, &hubpb.PublishRequest{Records: recs}); err != nil {
		t.Fatal(err)
	}
}

// recordKey is the etcd key of a record under the default prefix.
func (h *haMesh) recordKey(cluster, key string) string {
	return hub.DefaultEtcdPrefix + store.BucketRecords + "/" + store.RecordKey(cluster, key)
}

// storedVersion reads the version of the record etcd holds at key, or nil.
func (h *haMesh) storedVersion(ctx context.Context, key string) *registry.Version {
	h.t.Helper()
	resp, err := h.etcd().Get(ctx, key)
	if err != nil {
		h.t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	return h.decodeVersion(resp.Kvs[0].Value)
}

// storedHistory is every version written to key after revision from, in
// order, read back from etcd's history up to the key's last write.
func (h *haMesh) storedHistory(ctx context.Context, key string, from int64) []*registry.Version {
	h.t.Helper()
	resp, err := h.etcd().Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		h.t.Fatalf("etcd holds nothing at %s: %v", key, err)
	}
	last := resp.Kvs[0].ModRevision
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []*registry.Version
	for resp := range h.etcd().Watch(wctx, key, clientv3.WithRev(from+1)) {
		if err := resp.Err(); err != nil {
			h.t.Fatal(err)
		}
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypePut {
				out = append(out, h.decodeVersion(ev.Kv.Value))
			}
			if ev.Kv.ModRevision >= last {
				return out
			}
		}
	}
	h.t.Fatalf("the history of %s ended before revision %d: %v", key, last, ctx.Err())
	return nil
}

func (h *haMesh) etcdRevision(ctx context.Context) int64 {
	h.t.Helper()
	resp, err := h.etcd().Get(ctx, "revision-probe")
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.Header.Revision
}

func (h *haMesh) decodeVersion(value []byte) *registry.Version {
	h.t.Helper()
	sr, rec := new(registrypb.SignedRecord), new(registrypb.Record)
	if err := proto.Unmarshal(value, sr); err != nil {
		h.t.Fatal(err)
	}
	if err := proto.Unmarshal(sr.GetRecord(), rec); err != nil {
		h.t.Fatal(fmt.Errorf("stored record: %w", err))
	}
	return rec.GetVersion()
}

// etcd is a client of the mesh's etcd, made once.
func (h *haMesh) etcd() *clientv3.Client {
	h.cliOnce.Do(func() { h.cli = h.Etcd.Client(h.t) })
	return h.cli
}
