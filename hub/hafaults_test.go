package hub_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/testport"
	"github.com/federate/federate/registry"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
)

// startErr runs a hub that must not start, and returns why it did not.
func startErr(t *testing.T, cfg hub.Config) error {
	t.Helper()
	srv, err := hub.New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case err := <-done:
		if err == nil {
			err = errors.New("Run returned nil")
		}
		return err
	case <-srv.Ready():
		cancel()
		<-done
		t.Fatal("the hub started")
		return nil
	}
}

// Data under the prefix that is not this federation's is refused, with
// its key named, and nothing is written: neither over it nor beside it.
func TestHAForeignDataRefused(t *testing.T) {
	h := newHAMesh(t, 1)
	cli := h.Etcd.Client(t)
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	cases := []struct {
		name, prefix, key, value, want string
	}{
		{"foreign key", "/other/", "/other/settings/colour", "blue", "in none of the hub's buckets"},
		{"corrupt record", "/corrupt/", "/corrupt/records/east\x00order.shop.svc.cluster.local", "not a protobuf", "records/east\\x00order"},
		{"corrupt token", "/tokens/", "/tokens/tokens/abc", "{", "not a join token"},
		{"another mesh", "/federate/", "", "", "belongs to mesh \"shop\""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.key != "" {
				if _, err := cli.Put(ctx, c.key, c.value); err != nil {
					t.Fatal(err)
				}
			}
			before, err := cli.Get(ctx, c.prefix, clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			cfg := h.replicaConfig(9)
			cfg.Etcd.Prefix = c.prefix
			if c.name == "another mesh" {
				// The prefix holds shop's federation; cafe has a CA of its own.
				cfg.Mesh, cfg.CAFile = "cafe", filepath.Join(t.TempDir(), "cafe-ca.pem")
				if _, err := hub.CreateCAFile("cafe", cfg.CAFile, time.Now()); err != nil {
					t.Fatal(err)
				}
				cfg.Logger = h.Logger()
			}
			err = startErr(t, cfg)
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "nothing was written") {
				t.Fatalf("error %q does not name the key (%q) or say nothing was written", err, c.want)
			}
			after, err := cli.Get(ctx, c.prefix, clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			// The prefix's own keys, not etcd's revision: replica 0 may
			// renew its listing elsewhere meanwhile.
			if len(after.Kvs) != len(before.Kvs) || lastModified(after.Kvs) != lastModified(before.Kvs) {
				t.Fatalf("the refused hub wrote under %s: %d keys last modified at revision %d, before %d at %d", c.prefix, len(after.Kvs), lastModified(after.Kvs), len(before.Kvs), lastModified(before.Kvs))
			}
		})
	}
}

// lastModified is the newest mod revision of kvs.
func lastModified(kvs []*mvccpb.KeyValue) int64 {
	var last int64
	for _, kv := range kvs {
		last = max(last, kv.ModRevision)
	}
	return last
}

// An etcd that does not answer at start stops the hub with an error that
// names every endpoint tried.
func TestHAEtcdUnreachableAtStart(t *testing.T) {
	h := newHAMesh(t, 1)
	cfg := h.replicaConfig(9)
	cfg.Etcd.Endpoints = []string{"https://" + testport.Addr(t), "https://" + testport.Addr(t)}
	err := startErr(t, cfg)
	t.Logf("refused: %v", err)
	for _, want := range append([]string{"no etcd endpoint answers", "--etcd-endpoints"}, cfg.Etcd.Endpoints...) {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// With etcd gone, replicas refuse writes with Unavailable and say why,
// keep serving subscribers, and catch up once etcd is back.
func TestHAEtcdLostWhileRunning(t *testing.T) {
	h := newHAMesh(t, 2)
	east := h.AddCluster("east")
	h.Join("west")
	east.Update(t, services("east", 3)...)
	west := h.subscribe("west", h.Addr(1), nil)
	fedtest.Eventually(t, 10*time.Second, "west on replica 1 has east's slice", func() bool { return west.records("east") == 4 })

	h.Etcd.StopAll(t)
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	_, err := h.AdminClient().CreateToken(ctx, &hubpb.CreateTokenRequest{Cluster: "north"})
	st := fedtest.WantCode(t, err, "token create with etcd gone", codes.Unavailable)
	for _, want := range []string{"etcd at", "refuses changes until etcd answers"} {
		if !strings.Contains(st.Message(), want) {
			t.Errorf("refusal %q does not say %q", st.Message(), want)
		}
	}
	// Subscribers are served from memory: a new stream on replica 1 gets
	// east's slice.
	late := h.subscribe("west", h.Addr(1), nil)
	fedtest.Eventually(t, 10*time.Second, "a new subscriber on replica 1 gets east's slice without etcd", func() bool { return late.records("east") == 4 })

	h.Etcd.RestartAll(t)
	// east's member retries its publish; replica 1 learns it by the watch.
	east.Update(t, services("east", 4)...)
	fedtest.Eventually(t, 30*time.Second, "west on replica 1 receives east's change made after etcd returned", func() bool {
		return west.records("east") == 5
	})
	if _, err := h.AdminClient().CreateToken(ctx, &hubpb.CreateTokenRequest{Cluster: "north"}); err != nil {
		t.Fatalf("token create after etcd returned: %v", err)
	}
}

// A replica whose watch falls behind etcd's compaction reads everything
// again and relays what it missed: nothing is lost.
func TestHACompactedWatchResyncs(t *testing.T) {
	h := newHAMesh(t, 2)
	east := h.AddCluster("east")
	h.Join("west")
	east.Update(t, services("east", 2)...)
	west := h.subscribe("west", h.Addr(1), nil)
	fedtest.Eventually(t, 10*time.Second, "west on replica 1 has east's slice", func() bool { return west.records("east") == 3 })

	release := h.Replicas[1].HoldWatch()
	for n := 3; n <= 6; n++ {
		east.Update(t, services("east", n)...)
	}
	fedtest.Eventually(t, 10*time.Second, "replica 0 holds east's last version", func() bool {
		return east.Member.Version("east").GetCounter() > 0 && registry.Compare(h.Hub.SliceVersion("east"), east.Member.Version("east")) == 0 && h.Hub.SliceVersion("east").GetCounter() >= 7
	})
	want := h.Hub.SliceVersion("east")
	h.Etcd.Compact(t)
	if got := h.Replicas[1].SliceVersion("east"); registry.Compare(got, want) >= 0 {
		t.Fatalf("replica 1 has east at %v with its watch held, want older than %v", got, want)
	}
	release()
	fedtest.Eventually(t, 20*time.Second, "replica 1 resyncs east's slice after compaction", func() bool {
		return registry.Compare(h.Replicas[1].SliceVersion("east"), want) == 0
	})
	fedtest.Eventually(t, 10*time.Second, "west on replica 1 receives every service east published meanwhile", func() bool {
		return west.records("east") == 7
	})
}

// A replica calls only the etcd members that answer: with one stopped, its
// client leaves that member within seconds and writes go to the others;
// restarted, the member is called again. (The lab's frozen member, which
// holds its connections open, is where this matters: see 'lab verify
// --ha'.)
func TestHAEtcdMemberThatDoesNotAnswerIsLeft(t *testing.T) {
	h := newHAMesh(t, 1)
	h.Etcd.Stop(t, 0)
	rest := h.Etcd.Endpoints[1:]
	fedtest.Eventually(t, 10*time.Second, "the replica leaves the stopped member", func() bool {
		return slices.Equal(h.Hub.EtcdEndpointsInUse(), rest)
	})
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	for i := range 10 {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := h.AdminClient().CreateToken(cctx, &hubpb.CreateTokenRequest{Cluster: fmt.Sprintf("north%d", i)})
		cancel()
		if err != nil {
			t.Fatalf("token create %d with a member stopped: %v", i, err)
		}
	}
	h.Etcd.Restart(t, 0)
	fedtest.Eventually(t, 20*time.Second, "the replica calls the restarted member again", func() bool {
		return len(h.Hub.EtcdEndpointsInUse()) == 3
	})
}
