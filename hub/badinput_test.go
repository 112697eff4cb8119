package hub_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc/codes"
)

// Every test here runs its own mesh on loopback, so they run in parallel,
// with gossip's default timers: none waits for a cluster to turn stale.

func TestBadInputOversizedRecord(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("east")
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	cred := tm.ClusterCredential(t, "east")
	client := hubpb.NewHubClient(tm.DialAsCluster(t, "east"))
	limit := strconv.Itoa(registry.MaxRecordBytes)

	big := fedtest.CoffeeService("east", "big", 1, 18080)
	big.Endpoints[0].Labels = map[string]string{"padding": strings.Repeat("x", registry.MaxRecordBytes)}

	t.Run("signer refuses", func(t *testing.T) {
		signer := registry.Signer{Cluster: "east", Key: cred.Key(), Cert: cred.Leaf().Raw}
		_, err := signer.Sign(fedtest.ServiceRecord("east", big, 3, 1))
		if err == nil || !strings.Contains(err.Error(), limit) {
			t.Fatalf("signing an oversized service: %v, want an error naming the limit %s", err, limit)
		}
	})
	t.Run("hub refuses a record over the limit", func(t *testing.T) {
		sr := fedtest.SignWith(t, cred, fedtest.ServiceRecord("east", big, 3, 1))
		_, err := client.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{sr}})
		st := fedtest.WantCode(t, err, "publishing an oversized record", codes.InvalidArgument)
		if !strings.Contains(st.Message(), limit) {
			t.Fatalf("refusal %q does not name the limit %s", st.Message(), limit)
		}
	})
	t.Run("hub refuses a message over the gRPC limit", func(t *testing.T) {
		huge := &registrypb.SignedRecord{Record: make([]byte, membership.MaxMessageBytes)}
		_, err := client.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{huge}})
		fedtest.WantCode(t, err, "publishing a message over membership.MaxMessageBytes", codes.ResourceExhausted)
	})

	if got := tm.Hub.SliceClusters(); len(got) != 0 {
		t.Fatalf("hub holds slices of %v after refusing every record", got)
	}
	// The same connection still works.
	ok := fedtest.SignWith(t, cred, fedtest.ServiceRecord("east", fedtest.CoffeeService("east", "order", 2, 18080), 3, 1))
	if _, err := client.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{ok}}); err != nil {
		t.Fatalf("publishing a normal record after the refusals: %v", err)
	}
	if v := tm.Hub.SliceVersion("east"); v.GetIncarnation() != 3 || v.GetCounter() != 1 {
		t.Fatalf("hub holds east at %s, want 3.1", registry.FormatVersion(v))
	}
}

// sliceView is what must not change when a component is sent garbage.
type sliceView struct {
	Version             string
	Services, Endpoints int32
}

func statusView(st *hubpb.StatusResponse) map[string]sliceView {
	out := make(map[string]sliceView)
	for _, c := range st.GetClusters() {
		out[c.GetName()] = sliceView{registry.FormatVersion(c.GetSliceVersion()), c.GetServices(), c.GetEndpoints()}
	}
	return out
}

// garbage returns payloads no component should make sense of: random
// bytes, and random bytes behind the first bytes of a TLS record, of an
// HTTP/2 connection and of a labelled gossip packet.
func garbage(t *testing.T) [][]byte {
	t.Helper()
	labelled, err := memberlist.AddLabelHeaderToPacket(fedtest.RandomBytes(t, 1024), "shop")
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{
		fedtest.RandomBytes(t, 1),
		fedtest.RandomBytes(t, 1024),
		fedtest.RandomBytes(t, 64<<10),
		make([]byte, 4096),
		append([]byte{0x16, 0x03, 0x01, 0x40, 0x00}, fedtest.RandomBytes(t, 4096)...),
		append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), fedtest.RandomBytes(t, 1024)...),
		labelled,
	}
}

// sendTCP writes payload on a fresh connection, half-closes it and reads
// until the server closes it or the deadline passes.
func sendTCP(ctx context.Context, addr string, payload []byte) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	_, _ = conn.Write(payload) // the server may hang up before it read everything
	_ = conn.(*net.TCPConn).CloseWrite()
	_, _ = io.Copy(io.Discard, conn)
	return nil
}

func TestBadInputGarbageChangesNothing(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	east := tm.AddCluster("east")
	east.Update(t, fedtest.CoffeeService("east", "order", 2, 18080))
	west := tm.AddCluster("west")
	west.Update(t, fedtest.CoffeeService("west", "payment", 2, 18081))
	for _, c := range []string{"east", "west"} {
		fedtest.Eventually(t, 10*time.Second, c+" converged", func() bool {
			return tm.Converged(c) && registry.Compare(tm.Hub.SliceVersion(c), tm.Member(c).Member.Version(c)) == 0
		})
	}
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	admin := tm.AdminRegistry()
	views := func() map[string]map[string]sliceView {
		st, err := admin.Status(ctx, &hubpb.StatusRequest{})
		if err != nil {
			t.Fatalf("hub status: %v", err)
		}
		return map[string]map[string]sliceView{
			"hub":  statusView(st),
			"east": statusView(east.Member.StatusNow()),
			"west": statusView(west.Member.StatusNow()),
		}
	}
	before := views()

	tcpTargets := map[string]string{
		"hub api": tm.HubAddr, "hub gossip": tm.Hub.GossipAddr(),
		"east api": east.Member.Addr(), "east gossip": east.Member.GossipAddr(),
	}
	payloads := garbage(t)
	var wg sync.WaitGroup
	errs := make(chan error, len(tcpTargets)*len(payloads))
	for name, addr := range tcpTargets {
		for _, p := range payloads {
			wg.Go(func() {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				if err := sendTCP(cctx, addr, p); err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("tcp garbage: %v", err)
	}

	if diff := cmp.Diff(before, views()); diff != "" {
		t.Fatalf("garbage changed what the components hold (-before +after):\n%s", diff)
	}

	// Everything still works: a change in east reaches the hub and west.
	east.Update(t, fedtest.CoffeeService("east", "order", 4, 18080))
	fedtest.Eventually(t, 10*time.Second, "east's change at the hub and in west", func() bool {
		want := east.Member.Version("east")
		return registry.Compare(tm.Hub.SliceVersion("east"), want) == 0 &&
			registry.Compare(west.Member.Version("east"), want) == 0 &&
			len(fedtest.EndpointsOf(west.Member, "east", "order")) == 4
	})
	after := views()
	for _, node := range []string{"hub", "east", "west"} {
		if before[node]["west"] != after[node]["west"] {
			t.Errorf("%s holds west at %+v, was %+v", node, after[node]["west"], before[node]["west"])
		}
	}
}
