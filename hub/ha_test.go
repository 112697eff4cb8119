package hub_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Three replicas on one etcd serve at once: a slice published to one
// reaches subscribers of another by the etcd watch, a subscriber resumes
// by its version vector on a third and gets only what is newer, and a
// removal on one replica is applied by all.
func TestHAReplicasRelayEachOthersChanges(t *testing.T) {
	h := newHAMesh(t, 3)
	east := h.AddCluster("east") // publishes to replica 0
	h.Join("west")
	west := h.subscribe("west", h.Addr(2), nil)

	east.Update(t, services("east", 5)...)
	fedtest.Eventually(t, 10*time.Second, "west, on replica 2, receives east's 5 services and info", func() bool {
		return west.records("east") == 6
	})
	// Every replica holds the slice, at the version east published: the
	// one west received. Each replica applies it from its own etcd watch,
	// which may lag another's, even the replica east published to.
	want := west.version("east")
	if want == nil {
		t.Fatal("west received east's records without a version")
	}
	for i, r := range h.Replicas {
		fedtest.Eventually(t, 10*time.Second, "replica holds east's slice", func() bool {
			return registry.Compare(r.SliceVersion("east"), want) == 0
		})
		t.Logf("replica %d holds east at %v", i, r.SliceVersion("east"))
	}

	// Resume on replica 1 from what replica 2 sent: nothing of east again,
	// then only what is newer.
	known := west.version("east")
	resumed := h.subscribe("west", h.Addr(1), map[string]*registry.Version{"east": known})
	fedtest.Eventually(t, 10*time.Second, "resumed stream synced", resumed.isSynced)
	if n := resumed.records("east"); n != 0 {
		t.Fatalf("resumed stream sent %d of east's records it already had", n)
	}
	east.Update(t, append(services("east", 5), fedtest.CoffeeService("east", "payment", 3, 18080))...)
	fedtest.Eventually(t, 10*time.Second, "the resumed stream on replica 1 receives east's new service", func() bool {
		return resumed.has("east", "payment.shop.svc.cluster.local")
	})
	if n := resumed.notNewer("east", known); n != 0 {
		t.Errorf("the resumed stream sent %d records of east no newer than %v", n, known)
	}
	t.Logf("resumed stream received %d records of east, all newer than %v", resumed.records("east"), known)

	// A removal made on replica 1 reaches west's stream on replica 2, and
	// replica 0 refuses east's credential from then on.
	ctx := fedtest.DeadlineContext(t, 20*time.Second)
	admin, err := membership.Dial(h.Addr(1), h.Dir+"/hub/"+"admin.pem", h.Dir+"/hub/"+membership.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := hubpb.NewHubClient(admin).RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: "east"}); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 10*time.Second, "west on replica 2 learns east's removal", func() bool { return west.wasRemoved("east") })
	h.StopMember("east")
	conn, err := membership.Dial(h.Addr(0), h.Dir+"/east/"+membership.CredentialFile, h.Dir+"/east/"+membership.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fedtest.Eventually(t, 10*time.Second, "replica 0 refuses east's credential", func() bool {
		_, err := hubpb.NewRegistryClient(conn).Fetch(ctx, &hubpb.FetchRequest{})
		return status.Code(err) == codes.PermissionDenied
	})
	for i, r := range h.Replicas {
		if len(r.SliceClusters()) != 0 {
			t.Errorf("replica %d still holds %v after east's removal", i, r.SliceClusters())
		}
	}
}

// Sixteen joins with one token, spread over three replicas, race: etcd's
// transaction lets exactly one win, and the others are told the token was
// used.
func TestHAOneTokenSixteenJoinsOneWins(t *testing.T) {
	h := newHAMesh(t, 3)
	tok, err := membership.ParseToken(h.Token("east", time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		won     []int
		refused = map[string]int{}
	)
	start := make(chan struct{})
	for i := range 16 {
		copy := *tok
		copy.Hub = h.Addr(i % 3)
		wg.Go(func() {
			<-start
			_, err := membership.Join(ctx, copy.String())
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				won = append(won, i)
				return
			}
			refused[err.Error()]++
		})
	}
	close(start)
	wg.Wait()
	if len(won) != 1 {
		t.Fatalf("%d joins won (%v), want exactly 1; refusals: %v", len(won), won, refused)
	}
	for msg, n := range refused {
		if !strings.Contains(msg, "already used") && !strings.Contains(msg, "used") {
			t.Errorf("%d joins refused with %q, want the token's use named", n, msg)
		}
	}
	t.Logf("join %d won on replica %d; refusals: %v", won[0], won[0]%3, refused)
	used, err := h.Replicas[2].TokenUsedAt(tok.ID)
	if err != nil || used.IsZero() {
		t.Fatalf("replica 2 reads the token's use as %v, %v", used, err)
	}
}
