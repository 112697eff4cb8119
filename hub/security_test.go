package hub

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Every test here runs its own mesh on loopback, so they run in parallel.

// deadlineContext ends with the test or after d, whichever comes first.
func deadlineContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func clusterCredential(t *testing.T, tm *testMesh, cluster string) *trust.Credential {
	t.Helper()
	cred, err := trust.LoadCredential(filepath.Join(tm.dir, cluster, CredentialFile))
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// dialAsCluster connects to the hub with a joined cluster's files, as
// 'federate' does.
func dialAsCluster(t *testing.T, tm *testMesh, cluster string) *grpc.ClientConn {
	t.Helper()
	conn, err := Dial(tm.hubAddr, filepath.Join(tm.dir, cluster, CredentialFile), filepath.Join(tm.dir, cluster, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// dialWith connects to addr with a TLS configuration of the test's making.
func dialWith(t *testing.T, addr string, conf credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(conf))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func hubCA(t *testing.T, tm *testMesh) *x509.Certificate {
	t.Helper()
	cas, err := trust.LoadCertificates(filepath.Join(tm.dir, "hub", CAFile))
	if err != nil {
		t.Fatal(err)
	}
	return cas[0]
}

// serviceRecord is a record of svc in cluster's slice.
func serviceRecord(cluster string, svc *registry.Service, incarnation, counter uint64) *registry.Record {
	return &registry.Record{
		Cluster: cluster, Key: svc.GetHostname(),
		Version:  &registry.Version{Incarnation: incarnation, Counter: counter},
		SignedAt: time.Now().UnixNano(),
		Body:     &registrypb.Record_Service{Service: svc},
	}
}

// signWith signs rec with cred's key whatever cluster rec names: what a
// cluster trying to forge another's slice would do, since registry.Signer
// refuses.
func signWith(t *testing.T, cred *trust.Credential, rec *registry.Record) *registrypb.SignedRecord {
	t.Helper()
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, cred.Key().(*ecdsa.PrivateKey), digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return &registrypb.SignedRecord{Record: body, Signature: sig, Signer: cred.Leaf().Raw}
}

// wantCode fails unless err is a gRPC error with one of the codes.
func wantCode(t *testing.T, err error, what string, want ...codes.Code) *status.Status {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want one of %v", what, want)
	}
	st, _ := status.FromError(err)
	t.Logf("%s: refused: %v", what, err)
	if !slices.Contains(want, st.Code()) {
		t.Fatalf("%s: %v, want one of %v", what, err, want)
	}
	return st
}

// storedRecordKeys stops the hub and lists the record keys in its bbolt file.
func storedRecordKeys(t *testing.T, tm *testMesh) []string {
	t.Helper()
	tm.stopHub()
	s, err := store.Open(filepath.Join(tm.dir, "hub", StoreFile))
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
	tm := newTestMesh(t, testTimers)
	tm.join("east")
	tm.join("west")
	ctx := deadlineContext(t, 30*time.Second)
	east, west := clusterCredential(t, tm, "east"), clusterCredential(t, tm, "west")
	asEast := hubpb.NewHubClient(dialAsCluster(t, tm, "east"))
	asWest := hubpb.NewHubClient(dialAsCluster(t, tm, "west"))

	// East's own record goes through, so the refusals below are about
	// ownership and not a broken connection.
	order := coffeeService("east", "order", 2, 18080)
	own := signWith(t, east, serviceRecord("east", order, 7, 1))
	resp, err := asEast.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{own}})
	if err != nil {
		t.Fatalf("east publishing its own record: %v", err)
	}
	if v := resp.GetVersion(); v.GetIncarnation() != 7 || v.GetCounter() != 1 {
		t.Fatalf("publish returned version %s, want 7.1", registry.FormatVersion(v))
	}

	payment := coffeeService("west", "payment", 2, 18081)
	forged := signWith(t, east, serviceRecord("west", payment, 9, 1))
	t.Run("record of another cluster signed with own key", func(t *testing.T) {
		_, err := asEast.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{forged}})
		st := wantCode(t, err, "east publishing west's slice", codes.PermissionDenied, codes.InvalidArgument)
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
		wantCode(t, err, "west publishing a west record signed by east", codes.PermissionDenied, codes.InvalidArgument)
	})
	t.Run("forgery hidden behind a valid record", func(t *testing.T) {
		newer := signWith(t, east, serviceRecord("east", coffeeService("east", "order", 3, 18080), 7, 2))
		_, err := asEast.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{newer, forged}})
		wantCode(t, err, "a batch with one forged record", codes.PermissionDenied, codes.InvalidArgument)
		if v := tm.hub.set.Version("east"); v.GetCounter() != 1 {
			t.Errorf("the valid half of a refused batch was applied: east is at %s", registry.FormatVersion(v))
		}
	})
	t.Run("genuine record published by another cluster", func(t *testing.T) {
		genuine := signWith(t, east, serviceRecord("east", order, 7, 3))
		_, err := asWest.Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{genuine}})
		st := wantCode(t, err, "west publishing east's record", codes.PermissionDenied)
		if !strings.Contains(st.Message(), "own slice") {
			t.Errorf("refusal %q does not say a cluster publishes only its own slice", st.Message())
		}
	})
	t.Run("admin publishes nothing", func(t *testing.T) {
		genuine := signWith(t, west, serviceRecord("west", payment, 9, 1))
		_, err := tm.adminClient().Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{genuine}})
		wantCode(t, err, "admin publishing", codes.PermissionDenied)
	})
	t.Run("cluster creates no tokens", func(t *testing.T) {
		_, err := asEast.CreateToken(ctx, &hubpb.CreateTokenRequest{Cluster: "north"})
		wantCode(t, err, "east creating a token", codes.PermissionDenied)
	})

	if got := tm.hub.set.Clusters(); !slices.Equal(got, []string{"east"}) {
		t.Errorf("hub holds slices of %v, want only east", got)
	}
	if v := tm.hub.set.Version("east"); v.GetIncarnation() != 7 || v.GetCounter() != 1 {
		t.Errorf("hub holds east at %s, want 7.1", registry.FormatVersion(v))
	}
	keys := storedRecordKeys(t, tm)
	if want := []string{store.RecordKey("east", order.GetHostname())}; !slices.Equal(keys, want) {
		t.Errorf("hub store holds records %q, want %q", keys, want)
	}
}

// tokenUse reads what the hub recorded about a token.
func tokenUse(t *testing.T, srv *Server, token string) tokenRecord {
	t.Helper()
	tok, err := ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}
	data, err := srv.store.Get(store.BucketTokens, tok.ID)
	if err != nil || data == nil {
		t.Fatalf("hub has no record of token %s: %v", tok.ID, err)
	}
	var rec tokenRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// editToken re-encodes a token after edit changed its claims or secret.
func editToken(t *testing.T, token string, edit func(*Token)) string {
	t.Helper()
	tok, err := ParseToken(token)
	if err != nil {
		t.Fatal(err)
	}
	edit(tok)
	return tok.String()
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSecurityJoinTokens(t *testing.T) {
	t.Parallel()
	tm := newTestMesh(t, testTimers)
	ctx := deadlineContext(t, 30*time.Second)

	join := func(t *testing.T, token, wantCluster string) {
		t.Helper()
		ms, err := Join(ctx, token)
		if err != nil {
			t.Fatalf("join with a genuine token: %v", err)
		}
		if ms.Cluster != wantCluster || ms.Credential.ID() != ClusterID(tm.hub.td, wantCluster) {
			t.Fatalf("joined as %q with %s, want cluster %q", ms.Cluster, ms.Credential.ID(), wantCluster)
		}
	}
	refused := func(t *testing.T, token, want string) {
		t.Helper()
		_, err := Join(ctx, token)
		t.Logf("join refused: %v", err)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("join: %v, want an error containing %q", err, want)
		}
	}

	t.Run("used once", func(t *testing.T) {
		tok := tm.token("east", time.Hour)
		join(t, tok, "east")
		refused(t, tok, "already used")
	})
	t.Run("used once by concurrent joins", func(t *testing.T) {
		tok := tm.token("race", time.Hour)
		const joins = 8
		errs := make(chan error, joins)
		for range joins {
			go func() {
				_, err := Join(ctx, tok)
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
		tok := tm.token("north", time.Hour)
		refused(t, editToken(t, tok, func(tk *Token) { tk.Cluster = "south" }), "issued for cluster")
		join(t, tok, "north")
	})
	t.Run("forged secret", func(t *testing.T) {
		tok := tm.token("forge", time.Hour)
		refused(t, editToken(t, tok, func(tk *Token) { tk.Secret = randomBytes(t, 32) }), "not one this hub issued")
		refused(t, editToken(t, tok, func(tk *Token) {
			tk.ID = hex.EncodeToString(randomBytes(t, 8))
			tk.Secret = randomBytes(t, 32)
		}), "not one this hub issued")
		join(t, tok, "forge")
	})
	t.Run("fingerprint edited", func(t *testing.T) {
		tok := tm.token("pinned", time.Hour)
		refused(t, editToken(t, tok, func(tk *Token) { tk.CA = "sha256:" + hex.EncodeToString(randomBytes(t, 32)) }), "fingerprint")
		if used := tokenUse(t, tm.hub, tok).UsedAt; !used.IsZero() {
			t.Fatalf("the hub recorded a use at %s of a token whose join was refused by the client", used)
		}
		join(t, tok, "pinned")
	})
	t.Run("malformed", func(t *testing.T) {
		for _, tok := range []string{"", "fedjoin1", "fedjoin1.e30.AAAA", "fedjoin2.a.b", strings.Repeat("x", 5000)} {
			refused(t, tok, "malformed")
		}
		// The hub checks the form itself, whatever the client did.
		pinned := credentials.NewTLS(trust.PinnedTLS(trust.Fingerprint(hubCA(t, tm)), "/hub", nil))
		_, err := hubpb.NewHubClient(dialWith(t, tm.hubAddr, pinned)).Join(ctx, &hubpb.JoinRequest{Token: "fedjoin1.e30.AAAA"})
		st := wantCode(t, err, "hub join with a malformed token", codes.InvalidArgument)
		if !strings.Contains(st.Message(), "malformed") {
			t.Errorf("hub refusal %q does not say the token is malformed", st.Message())
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		pinned := credentials.NewTLS(trust.PinnedTLS(trust.Fingerprint(hubCA(t, tm)), "/hub", nil))
		conn := dialWith(t, tm.hubAddr, pinned)
		hc, rc := hubpb.NewHubClient(conn), hubpb.NewRegistryClient(conn)
		calls := map[string]func() error{
			"publish": func() error { _, err := hc.Publish(ctx, &hubpb.PublishRequest{}); return err },
			"token":   func() error { _, err := hc.CreateToken(ctx, &hubpb.CreateTokenRequest{Cluster: "east"}); return err },
			"renew":   func() error { _, err := hc.Renew(ctx, &hubpb.RenewRequest{}); return err },
			"fetch":   func() error { _, err := rc.Fetch(ctx, &hubpb.FetchRequest{}); return err },
			"status":  func() error { _, err := rc.Status(ctx, &hubpb.StatusRequest{}); return err },
		}
		for name, call := range calls {
			wantCode(t, call(), name+" without a credential", codes.Unauthenticated)
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
	srv, err := New(Config{
		Mesh: "shop", Listen: "127.0.0.1:0", DataDir: dir, GossipProfile: "lan",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Now:    clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runComponent(t, srv.Run, srv.Ready()))
	ctx := deadlineContext(t, 30*time.Second)
	conn, err := Dial(srv.Addr(), filepath.Join(dir, AdminCredFile), filepath.Join(dir, CAFile))
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
	if _, err := Join(ctx, early); err != nil {
		t.Fatalf("join within the token's lifetime: %v", err)
	}
	clock.Advance(31 * time.Minute)
	_, err = Join(ctx, late)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("join after the token's lifetime: %v, want an error containing %q", err, "expired")
	}
	if used := tokenUse(t, srv, late).UsedAt; !used.IsZero() {
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
	leaf, err := ca.Issue(ClusterID(td, "east"), key.Public(), time.Hour, time.Now())
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
	tm := newTestMesh(t, testTimers)
	east := tm.addCluster("east")
	east.update(t, coffeeService("east", "order", 2, 18080))
	eventually(t, 10*time.Second, "east's slice at the hub", func() bool {
		return registry.Compare(tm.hub.set.Version("east"), east.member.Version("east")) == 0
	})
	before := tm.hub.set.Version("east")
	ctx := deadlineContext(t, 30*time.Second)
	shop := tm.hub.td
	bundle := trust.Bundle(shop, hubCA(t, tm))
	targets := map[string]string{"hub": tm.hubAddr, "member": east.member.Addr()}

	// The same connection with the mesh's own credential works, so the
	// refusals below are about the credential.
	own := credentials.NewTLS(trust.ClientTLS(clusterCredential(t, tm, "east"), bundle, tlsconfig.AuthorizeAny()))
	for target, addr := range targets {
		if _, err := hubpb.NewRegistryClient(dialWith(t, addr, own)).Status(ctx, &hubpb.StatusRequest{}); err != nil {
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
			newer := signWith(t, cred, serviceRecord("east", coffeeService("east", "order", 9, 18080), before.GetIncarnation()+1, 1))
			for target, addr := range targets {
				conn := dialWith(t, addr, tlsConf)
				rc := hubpb.NewRegistryClient(conn)
				_, err := rc.Fetch(ctx, &hubpb.FetchRequest{})
				wantCode(t, err, target+" fetch", codes.Unavailable, codes.Unauthenticated, codes.PermissionDenied)
				_, err = rc.Status(ctx, &hubpb.StatusRequest{})
				wantCode(t, err, target+" status", codes.Unavailable, codes.Unauthenticated, codes.PermissionDenied)
				if target == "hub" {
					_, err = hubpb.NewHubClient(conn).Publish(ctx, &hubpb.PublishRequest{Records: []*registrypb.SignedRecord{newer}})
					wantCode(t, err, "hub publish", codes.Unavailable, codes.Unauthenticated, codes.PermissionDenied)
				}
			}
		})
	}
	if got := tm.hub.set.Version("east"); registry.Compare(got, before) != 0 {
		t.Fatalf("hub holds east at %s after the refused calls, want %s", registry.FormatVersion(got), registry.FormatVersion(before))
	}
	if got := east.member.Version("east"); registry.Compare(got, before) != 0 {
		t.Fatalf("east is at %s after the refused calls, want %s", registry.FormatVersion(got), registry.FormatVersion(before))
	}
}
