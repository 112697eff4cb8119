package hub_test

import (
	"crypto/x509"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
)

// Every test here runs its own mesh on loopback, so they run in parallel.
// None waits for a cluster to turn stale: they keep gossip's default
// timers, which a slow run does not outlast (a joined cluster that never
// gossips would otherwise expire at the hub mid-test).

// storedRecordKeys stops the hub and lists the record keys in its bbolt file.
func storedRecordKeys(t *testing.T, tm *fedtest.Mesh) []string {
	t.Helper()
	tm.StopHub()
	s, err := store.Open(filepath.Join(tm.Dir, "hub", hub.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var keys []string
	err = s.ForEach(store.BucketRecords, func(key string, _ []byte) error {
		keys = append(keys, key)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestSecurityClusterPublishesOnlyItsOwnSlice(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("east")
	tm.Join("west")
	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	east, west := tm.ClusterCredential(t, "east"), tm.ClusterCredential(t, "west")
	asEast := hubpb.NewHubClient(tm.DialAsCluster(t, "east"))
	asWest := hubpb.NewHubClient(tm.DialAsCluster(t, "west"))

	// East's own record goes through, so the refusals below are about
	// ownership and not a broken connection.
	order := fedtest.CoffeeService("east", "order", 2, 18080)
	own := fedtest.SignWith(t, east, fedtest.ServiceRecord("east", order, 7, 1))
	resp, err := asEast.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{own}})
	if err != nil {
		t.Fatalf("east publishing its own record: %v", err)
	}
	if v := resp.GetVersion(); v.GetIncarnation() != 7 || v.GetCounter() != 1 {
		t.Fatalf("publish returned version %s, want 7.1", registry.FormatVersion(v))
	}

	payment := fedtest.CoffeeService("west", "payment", 2, 18081)
	forged := fedtest.SignWith(t, east, fedtest.ServiceRecord("west", payment, 9, 1))
	t.Run("record of another cluster signed with own key", func(t *testing.T) {
		_, err := asEast.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{forged}})
		st := fedtest.WantCode(t, err, "east publishing west's slice", codes.PermissionDenied, codes.InvalidArgument)
		for _, want := range []string{`"west"`, `"east"`, "signed by"} {
			if !strings.Contains(st.Message(), want) {
				t.Errorf("refusal %q does not name the problem (missing %s)", st.Message(), want)
			}
		}
	})
	t.Run("forged record relayed by its victim", func(t *testing.T) {
		// West's own connection does not make east's signature on a west
		// record acceptable.
		_, err := asWest.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{forged}})
		fedtest.WantCode(t, err, "west publishing a west record signed by east", codes.PermissionDenied, codes.InvalidArgument)
	})
	t.Run("forgery hidden behind a valid record", func(t *testing.T) {
		newer := fedtest.SignWith(t, east, fedtest.ServiceRecord("east", fedtest.CoffeeService("east", "order", 3, 18080), 7, 2))
		_, err := asEast.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{newer, forged}})
		fedtest.WantCode(t, err, "a batch with one forged record", codes.PermissionDenied, codes.InvalidArgument)
		if v := tm.Hub.SliceVersion("east"); v.GetCounter() != 1 {
			t.Errorf("the valid half of a refused batch was applied: east is at %s", registry.FormatVersion(v))
		}
	})
	t.Run("genuine record published by another cluster", func(t *testing.T) {
		genuine := fedtest.SignWith(t, east, fedtest.ServiceRecord("east", order, 7, 3))
		_, err := asWest.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{genuine}})
		st := fedtest.WantCode(t, err, "west publishing east's record", codes.PermissionDenied)
		if !strings.Contains(st.Message(), "own slice") {
			t.Errorf("refusal %q does not say a cluster publishes only its own slice", st.Message())
		}
	})
	t.Run("admin publishes nothing", func(t *testing.T) {
		genuine := fedtest.SignWith(t, west, fedtest.ServiceRecord("west", payment, 9, 1))
		_, err := tm.AdminClient().Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{genuine}})
		fedtest.WantCode(t, err, "admin publishing", codes.PermissionDenied)
	})
	t.Run("cluster creates no tokens", func(t *testing.T) {
		_, err := asEast.CreateToken(ctx, &hubpb.CreateTokenRequest{Cluster: "north"})
		fedtest.WantCode(t, err, "east creating a token", codes.PermissionDenied)
	})

	if got := tm.Hub.SliceClusters(); !slices.Equal(got, []string{"east"}) {
		t.Errorf("hub holds slices of %v, want only east", got)
	}
	if v := tm.Hub.SliceVersion("east"); v.GetIncarnation() != 7 || v.GetCounter() != 1 {
		t.Errorf("hub holds east at %s, want 7.1", registry.FormatVersion(v))
	}
	keys := storedRecordKeys(t, tm)
	if want := []string{store.RecordKey("east", order.GetHostname())}; !slices.Equal(keys, want) {
		t.Errorf("hub store holds records %q, want %q", keys, want)
	}
}

// tokenUsedAt reads when the hub recorded a use of a token: zero if never.
func tokenUsedAt(t *testing.T, srv *hub.Server, token string) time.Time {
	t.Helper()
	tok, err := membership.ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}
	used, err := srv.TokenUsedAt(tok.ID)
	if err != nil {
		t.Fatalf("reading the hub's record of token %s: %v", tok.ID, err)
	}
	return used
}

// editToken re-encodes a token after edit changed its claims or secret.
func editToken(t *testing.T, token string, edit func(*membership.Token)) string {
	t.Helper()
	tok, err := membership.ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}
	edit(tok)
	return tok.String()
}
func TestSecurityJoinTokens(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	shop := spiffeid.RequireTrustDomainFromString("shop") // the mesh's trust domain

	join := func(t *testing.T, token, wantCluster string) {
		t.Helper()
		ms, err := membership.Join(ctx, token)
		if err != nil {
			t.Fatalf("join with a genuine token: %v", err)
		}
		if ms.Cluster != wantCluster || ms.Credential.ID() != membership.ClusterID(shop, wantCluster) {
			t.Fatalf("joined as %q with %s, want cluster %q", ms.Cluster, ms.Credential.ID(), wantCluster)
		}
	}
	refused := func(t *testing.T, token, want string) {
		t.Helper()
		_, err := membership.Join(ctx, token)
		t.Logf("join refused: %v", err)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("join: %v, want an error containing %q", err, want)
		}
	}

	t.Run("used once", func(t *testing.T) {
		tok := tm.Token("east", time.Hour)
		join(t, tok, "east")
		refused(t, tok, "already used")
	})
	t.Run("used once by concurrent joins", func(t *testing.T) {
		tok := tm.Token("race", time.Hour)
		const joins = 8
		errs := make(chan error, joins)
		for range joins {
			go func() {
				_, err := membership.Join(ctx, tok)
				errs <- err
			}()
		}
		joined := 0
		for range joins {
			select {
			case err := <-errs:
				switch {
				case err == nil:
					joined++
				case !strings.Contains(err.Error(), "already used"):
					t.Errorf("concurrent join: %v, want success or %q", err, "already used")
				}
			case <-ctx.Done():
				t.Fatal("concurrent joins did not finish")
			}
		}
		if joined != 1 {
			t.Fatalf("%d of %d concurrent joins with one token succeeded, want 1", joined, joins)
		}
	})
	t.Run("claims edited to another cluster", func(t *testing.T) {
		tok := tm.Token("north", time.Hour)
		refused(t, editToken(t, tok, func(tk *membership.Token) { tk.Cluster = "south" }), "issued for cluster")
		join(t, tok, "north")
	})
	t.Run("forged secret", func(t *testing.T) {
		tok := tm.Token("forge", time.Hour)
		refused(t, editToken(t, tok, func(tk *membership.Token) { tk.Secret = fedtest.RandomBytes(t, 32) }), "not one this hub issued")
		refused(t, editToken(t, tok, func(tk *membership.Token) {
			tk.ID = hex.EncodeToString(fedtest.RandomBytes(t, 8))
			tk.Secret = fedtest.RandomBytes(t, 32)
		}), "not one this hub issued")
		join(t, tok, "forge")
	})
	t.Run("fingerprint edited", func(t *testing.T) {
		tok := tm.Token("pinned", time.Hour)
		refused(t, editToken(t, tok, func(tk *membership.Token) { tk.CA = "sha256:" + hex.EncodeToString(fedtest.RandomBytes(t, 32)) }), "fingerprint")
		if used := tokenUsedAt(t, tm.Hub, tok); !used.IsZero() {
			t.Fatalf("the hub recorded a use at %s of a token whose join was refused by the client", used)
		}
		join(t, tok, "pinned")
	})
	t.Run("malformed", func(t *testing.T) {
		for _, tok := range []string{"", "fedjoin1", "fedjoin1.e30.AAAA", "fedjoin2.a.b", strings.Repeat("x", 5000)} {
			refused(t, tok, "malformed")
		}
		// The hub checks the form itself, whatever the client did.
		pinned := credentials.NewTLS(trust.PinnedTLS(trust.Fingerprint(tm.HubCA(t)), "/hub", nil))
		_, err := hubpb.NewHubClient(fedtest.DialWith(t, tm.HubAddr, pinned)).Join(ctx, &hubpb.JoinRequest{Token: "fedjoin1.e30.AAAA"})
		st := fedtest.WantCode(t, err, "hub join with a malformed token", codes.InvalidArgument)
		if !strings.Contains(st.Message(), "malformed") {
			t.Errorf("hub refusal %q does not say the token is malformed", st.Message())
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		pinned := credentials.NewTLS(trust.PinnedTLS(trust.Fingerprint(tm.HubCA(t)), "/hub", nil))
		conn := fedtest.DialWith(t, tm.HubAddr, pinned)
		hc, rc := hubpb.NewHubClient(conn), hubpb.NewRegistryClient(conn)
		calls := map[string]func() error{
			"publish": func() error { _, err := hc.Publish(ctx, &hubpb.PublishRequest{}); return err },
			"token":   func() error { _, err := hc.CreateToken(ctx, &hubpb.CreateTokenRequest{Cluster: "east"}); return err },
			"renew":   func() error { _, err := hc.Renew(ctx, &hubpb.RenewRequest{}); return err },
			"fetch":   func() error { _, err := rc.Fetch(ctx, &hubpb.FetchRequest{}); return err },
			"status":  func() error { _, err := rc.Status(ctx, &hubpb.StatusRequest{}); return err },
		}
		for name, call := range calls {
			fedtest.WantCode(t, call(), name+" without a credential", codes.Unauthenticated)
		}
	})
}

// manualClock is a clock the test moves.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestSecurityExpiredToken(t *testing.T) {
	t.Parallel()
	clock := &manualClock{now: time.Now()}
	dir := t.TempDir()
	srv, err := hub.New(hub.Config{
		Mesh: "shop", Listen: "127.0.0.1:0", DataDir: dir, GossipProfile: "lan",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Now:    clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fedtest.Start(t, srv.Run, srv.Ready()))
	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	conn, err := membership.Dial(srv.Addr(), filepath.Join(dir, hub.AdminCredFile), filepath.Join(dir, membership.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	admin := hubpb.NewHubClient(conn)
	mint := func(cluster string) string {
		resp, err := admin.CreateToken(ctx, &hubpb.CreateTokenRequest{Cluster: cluster, TtlSeconds: 3600})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetToken()
	}
	early, late := mint("early"), mint("late")

	clock.Advance(30 * time.Minute)
	if _, err := membership.Join(ctx, early); err != nil {
		t.Fatalf("join within the token's lifetime: %v", err)
	}
	clock.Advance(31 * time.Minute)
	_, err = membership.Join(ctx, late)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("join after the token's lifetime: %v, want an error containing %q", err, "expired")
	}
	if used := tokenUsedAt(t, srv, late); !used.IsZero() {
		t.Fatalf("the hub recorded a use of an expired token at %s", used)
	}
}

// foreignCredential is a cluster credential that no CA of the mesh issued.
func foreignCredential(t *testing.T, td spiffeid.TrustDomain) *trust.Credential {
	t.Helper()
	ca, err := trust.NewCA(td, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(membership.ClusterID(td, "east"), key.Public(), time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cred, err := trust.NewCredential([]*x509.Certificate{leaf, ca.Cert}, key)
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

func TestSecurityForeignCredentialIsRefused(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, gossip.Timers{})
	east := tm.AddCluster("east")
	east.Update(t, fedtest.CoffeeService("east", "order", 2, 18080))
	fedtest.Eventually(t, 10*time.Second, "east's slice at the hub", func() bool {
		return registry.Compare(tm.Hub.SliceVersion("east"), east.Member.Version("east")) == 0
	})
	before := tm.Hub.SliceVersion("east")
	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	shop := spiffeid.RequireTrustDomainFromString("shop") // the mesh's trust domain
	bundle := trust.Bundle(shop, tm.HubCA(t))
	targets := map[string]string{"hub": tm.HubAddr, "member": east.Member.Addr()}

	// The same connection with the mesh's own credential works, so the
	// refusals below are about the credential.
	own := credentials.NewTLS(trust.ClientTLS(tm.ClusterCredential(t, "east"), bundle, tlsconfig.AuthorizeAny()))
	for target, addr := range targets {
		if _, err := hubpb.NewRegistryClient(fedtest.DialWith(t, addr, own)).Status(ctx, &hubpb.StatusRequest{}); err != nil {
			t.Fatalf("%s status with a mesh credential: %v", target, err)
		}
	}

	for name, td := range map[string]spiffeid.TrustDomain{
		"other trust domain":           spiffeid.RequireTrustDomainFromString("other"),
		"impostor CA of the same name": shop,
	} {
		t.Run(name, func(t *testing.T) {
			cred := foreignCredential(t, td)
			tlsConf := credentials.NewTLS(trust.ClientTLS(cred, bundle, tlsconfig.AuthorizeAny()))
			newer := fedtest.SignWith(t, cred, fedtest.ServiceRecord("east", fedtest.CoffeeService("east", "order", 9, 18080), before.GetIncarnation()+1, 1))
			for target, addr := range targets {
				conn := fedtest.DialWith(t, addr, tlsConf)
				rc := hubpb.NewRegistryClient(conn)
				_, err := rc.Fetch(ctx, &hubpb.FetchRequest{})
				fedtest.WantCode(t, err, target+" fetch", codes.Unavailable, codes.Unauthenticated, codes.PermissionDenied)
				_, err = rc.Status(ctx, &hubpb.StatusRequest{})
				fedtest.WantCode(t, err, target+" status", codes.Unavailable, codes.Unauthenticated, codes.PermissionDenied)
				if target == "hub" {
					_, err = hubpb.NewHubClient(conn).Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{newer}})
					fedtest.WantCode(t, err, "hub publish", codes.Unavailable, codes.Unauthenticated, codes.PermissionDenied)
				}
			}
		})
	}
	if got := tm.Hub.SliceVersion("east"); registry.Compare(got, before) != 0 {
		t.Fatalf("hub holds east at %s after the refused calls, want %s", registry.FormatVersion(got), registry.FormatVersion(before))
	}
	if got := east.Member.Version("east"); registry.Compare(got, before) != 0 {
		t.Fatalf("east is at %s after the refused calls, want %s", registry.FormatVersion(got), registry.FormatVersion(before))
	}
}
