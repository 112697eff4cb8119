package hub_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// serialOf is a credential's serial as the hub reports it.
func serialOf(cred *trust.Credential) string { return fmt.Sprintf("%X", cred.Leaf().SerialNumber) }

// wantRefusedEverywhere checks that every hub call made with conn, a
// removed cluster's connection, is refused as a removal.
func wantRefusedEverywhere(t *testing.T, ctx context.Context, conn *grpc.ClientConn, cluster string, cred *trust.Credential) {
	t.Helper()
	reg, h := hubpb.NewRegistryClient(conn), hubpb.NewHubClient(conn)
	rec := fedtest.SignWith(t, cred, fedtest.ServiceRecord(cluster, fedtest.CoffeeService(cluster, "late", 1, 18090), 99, 1))
	calls := map[string]func() error{
		"Status": func() error { _, err := reg.Status(ctx, &hubpb.StatusRequest{}); return err },
		"Fetch":  func() error { _, err := reg.Fetch(ctx, &hubpb.FetchRequest{}); return err },
		"Publish": func() error {
			_, err := h.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{rec}})
			return err
		},
		"Renew": func() error { _, err := h.Renew(ctx, &hubpb.RenewRequest{}); return err },
		"Subscribe": func() error {
			stream, err := h.Subscribe(ctx, &hubpb.SubscribeRequest{})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		},
	}
	for name, call := range calls {
		st := fedtest.WantCode(t, call(), cluster+"'s "+name+" after its removal", codes.PermissionDenied)
		if !strings.Contains(st.Message(), "removed") {
			t.Errorf("%s refusal %q does not say the cluster was removed", name, st.Message())
		}
	}
}

// Removing a connected cluster closes its open hub streams at once (its
// member's and one of the test's own), says what it revoked, and its
// credential is refused on every call afterwards.
func TestIntegrationRemoveClosesStreamsAndRevokes(t *testing.T) {
	t.Parallel()
	tm := fedtest.StartCoffeeShop(t, gossip.Timers{})
	ctx := fedtest.DeadlineContext(t, 60*time.Second)
	cred := tm.ClusterCredential(t, "central")
	conn := tm.DialAsCluster(t, "central")
	stream, err := hubpb.NewHubClient(conn).Subscribe(ctx, &hubpb.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for synced := false; !synced; {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("central's stream before the removal: %v", err)
		}
		synced = resp.GetSynced()
	}
	fedtest.Eventually(t, 10*time.Second, "central's member and the test subscribed", func() bool {
		return tm.Hub.SubscribersOf("central") == 2
	})

	removed := time.Now()
	resp, err := tm.AdminClient().RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: "central"})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetServicesWithdrawn(); got != 2 {
		t.Errorf("services withdrawn: %d, want central's 2", got)
	}
	if got := resp.GetStreamsClosed(); got != 2 {
		t.Errorf("streams closed: %d, want 2 (central's member and the test)", got)
	}
	if got := resp.GetCredentials(); len(got) != 1 || got[0].GetSerial() != serialOf(cred) {
		t.Errorf("credentials revoked: %v, want central's one, serial %s", got, serialOf(cred))
	}

	// The open stream ends with the removal as its reason, well within 5s.
	for {
		_, err := stream.Recv()
		if err == nil {
			continue // the removal itself, relayed to every subscriber
		}
		st := fedtest.WantCode(t, err, "central's open stream after the removal", codes.PermissionDenied)
		if !strings.Contains(st.Message(), "removed") {
			t.Errorf("stream ended with %q, which does not name the removal", st.Message())
		}
		break
	}
	if d := time.Since(removed); d > 5*time.Second {
		t.Errorf("central's stream ended %s after the removal, want within 5s", d)
	}
	// Central's member reconnects and is refused: it holds no stream.
	fedtest.Eventually(t, 5*time.Second, "central's member holds no hub stream", func() bool {
		return tm.Hub.SubscribersOf("central") == 0
	})
	wantRefusedEverywhere(t, ctx, tm.DialAsCluster(t, "central"), "central", cred)
	if n := tm.Hub.SubscribersOf("central"); n != 0 {
		t.Errorf("central holds %d hub streams after its removal", n)
	}
}

// A cluster that joined but never published can be removed: its
// credential, which read Status and Fetch, is refused from then on.
func TestIntegrationRemoveNeverPublishedCluster(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("north")
	tm.AddCluster("east").Update(t, fedtest.CoffeeService("east", "order", 2, 18080))
	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	cred := tm.ClusterCredential(t, "north")
	conn := tm.DialAsCluster(t, "north")
	if _, err := hubpb.NewRegistryClient(conn).Fetch(ctx, &hubpb.FetchRequest{}); err != nil {
		t.Fatalf("north's Fetch before its removal: %v", err)
	}
	spare := tm.Token("north", time.Hour) // made before the removal, unused

	resp, err := tm.AdminClient().RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: "north"})
	if err != nil {
		t.Fatalf("removing a joined cluster that never published: %v", err)
	}
	if got := resp.GetCredentials(); len(got) != 1 || got[0].GetSerial() != serialOf(cred) {
		t.Errorf("credentials revoked: %v, want north's, serial %s", got, serialOf(cred))
	}
	if resp.GetServicesWithdrawn() != 0 || resp.GetStreamsClosed() != 0 {
		t.Errorf("north withdrew %d services and closed %d streams, want none", resp.GetServicesWithdrawn(), resp.GetStreamsClosed())
	}
	if resp.GetTokensRevoked() != 1 {
		t.Errorf("tokens revoked: %d, want north's spare one", resp.GetTokensRevoked())
	}
	wantRefusedEverywhere(t, ctx, conn, "north", cred)
	if _, err := membership.Join(ctx, spare); err == nil || !strings.Contains(err.Error(), "not one this hub issued") {
		t.Errorf("joining with a token made before the removal: %v, want it refused", err)
	}

	for _, name := range []string{"north", "nowhere"} {
		_, err := tm.AdminClient().RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: name})
		st := fedtest.WantCode(t, err, "removing "+name, codes.NotFound)
		if !strings.Contains(st.Message(), "federate status") {
			t.Errorf("refusal %q does not say where to look", st.Message())
		}
	}
	// East was not touched, and a new token brings north back.
	if tm.Hub.SliceVersion("east") == nil {
		t.Error("east's slice went with north's removal")
	}
	tm.Join("north")
	if _, err := hubpb.NewRegistryClient(tm.DialAsCluster(t, "north")).Fetch(ctx, &hubpb.FetchRequest{}); err != nil {
		t.Errorf("north's Fetch after joining again: %v", err)
	}
}
