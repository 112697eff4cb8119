package member_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/member"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Identity and trust across clusters: every test runs a real hub and real
// members on loopback, and real TLS handshakes between workloads.

var (
	eastTD    = spiffeid.RequireTrustDomainFromString("east.shop")
	westTD    = spiffeid.RequireTrustDomainFromString("west.shop")
	centralTD = spiffeid.RequireTrustDomainFromString("central.shop")
)

// federate starts the named clusters, publishes each one's ClusterInfo (and
// so its bundle) and waits until every member holds every bundle at the
// owner's sequence.
func federate(t *testing.T, tm *fedtest.Mesh, configure map[string]func(*member.Config), names ...string) map[string]*fedtest.Member {
	t.Helper()
	out := make(map[string]*fedtest.Member)
	for _, name := range names {
		tm.Join(name)
		out[name] = tm.StartMemberWith(name, configure[name])
	}
	for _, name := range names {
		out[name].Update(t)
	}
	fedtest.Eventually(t, 15*time.Second, "every member holds every member's bundle", func() bool {
		for _, m := range out {
			for _, owner := range out {
				td := owner.Member.Authority().TrustDomain()
				got, ok := m.Member.Bundles().Sequence(td)
				if !ok || got != owner.Member.Authority().Status().Sequence {
					return false
				}
			}
		}
		return true
	})
	return out
}

// deadlineContext is a context that ends with the test or after d.
func deadlineContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails the test unless err is a gRPC status with one of the
// codes; it returns the status.
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

// logBuffer collects slog text output from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// line returns the first logged line that contains every part.
func (b *logBuffer) line(parts ...string) (string, bool) {
	for l := range strings.Lines(b.String()) {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return strings.TrimSpace(l), true
		}
	}
	return "", false
}

// wantLogged waits until a line with every part is logged.
func (b *logBuffer) wantLogged(t *testing.T, parts ...string) string {
	t.Helper()
	var got string
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if l, ok := b.line(parts...); ok {
			got = l
			break
		}
		select {
		case <-deadline.C:
			t.Fatalf("no log line with %q; log:\n%s", parts, b.String())
		case <-tick.C:
		}
	}
	return got
}

// issueSVID issues a workload SVID with a fresh key.
func issueSVID(t testing.TB, a *trust.Authority, id string, ttl time.Duration) *trust.Credential {
	t.Helper()
	cred, err := a.IssueCredential(spiffeid.RequireFromString(id), ttl)
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// startWorkload runs a TLS server on loopback that writes "ok" to every
// client whose handshake succeeds. It stops with the test.
func startWorkload(t *testing.T, conf *tls.Config) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				tc := tls.Server(c, conf)
				if tc.Handshake() == nil {
					_, _ = tc.Write([]byte("ok"))
				}
			}()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		wg.Wait()
	})
	return lis.Addr().String()
}

// handshake opens a new TLS connection and waits for the server's "ok",
// which it writes only after accepting the client: in TLS 1.3 the client
// finishes its handshake before the server has checked its certificate.
// It returns the server's leaf.
func handshake(ctx context.Context, addr string, conf *tls.Config) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: conf}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, err
	}
	if string(buf) != "ok" {
		return nil, errors.New("server did not greet")
	}
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

func TestTrustFederatedMTLSAcrossClusters(t *testing.T) {
	t.Parallel()
	tm := newMesh(t, testTimers)
	ms := federate(t, tm, nil, "east", "west", "central")
	ctx := deadlineContext(t, 30*time.Second)
	want := []spiffeid.TrustDomain{centralTD, eastTD, westTD}
	for name, m := range ms {
		if got := m.Member.Bundles().TrustDomains(); !slices.Equal(got, want) {
			t.Fatalf("%s holds bundles of %v, want %v", name, got, want)
		}
	}
	east, west, central := ms["east"].Member, ms["west"].Member, ms["central"].Member

	order := "spiffe://east.shop/ns/shop/sa/order"
	westFrontend := spiffeid.RequireFromString("spiffe://west.shop/ns/shop/sa/frontend")
	centralFrontend := spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/frontend")
	var serverLog, clientLog logBuffer
	serverConf := trust.MTLSServer(issueSVID(t, east.Authority(), order, time.Hour), east.Bundles(),
		tlsconfig.AuthorizeOneOf(westFrontend, centralFrontend), serverLog.logger())
	addr := startWorkload(t, serverConf)
	client := func(cred *trust.Credential, bundles x509bundle.Source) *tls.Config {
		return trust.MTLSClient(cred, bundles, tlsconfig.AuthorizeID(spiffeid.RequireFromString(order)), clientLog.logger())
	}

	// Workloads of the other clusters reach east's server, each verifying
	// with its own member's bundles.
	for _, c := range []struct {
		name string
		conf *tls.Config
	}{
		{"west", client(issueSVID(t, west.Authority(), westFrontend.String(), time.Hour), west.Bundles())},
		{"central", client(issueSVID(t, central.Authority(), centralFrontend.String(), time.Hour), central.Bundles())},
	} {
		leaf, err := handshake(ctx, addr, c.conf)
		if err != nil {
			t.Fatalf("%s to east: %v\nserver log:\n%s", c.name, err, serverLog.String())
		}
		if id, _ := x509svid.IDFromCert(leaf); id.String() != order {
			t.Fatalf("%s reached %s, want %s", c.name, id, order)
		}
	}
	if s := serverLog.String() + clientLog.String(); s != "" {
		t.Fatalf("successful handshakes logged refusals:\n%s", s)
	}

	rogue, err := trust.NewAuthority(spiffeid.RequireTrustDomainFromString("rogue.shop"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// West's own root, but a clock two hours behind: an SVID that chains
	// to a federated root and has expired.
	westState, err := west.Authority().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	westPast, err := trust.LoadAuthority(westTD, westState, func() time.Time { return time.Now().Add(-2 * time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	expired := issueSVID(t, westPast, westFrontend.String(), 10*time.Minute)
	if !expired.Expiry().Before(time.Now()) {
		t.Fatalf("expired SVID is valid until %s", expired.Expiry())
	}
	for _, c := range []struct {
		name   string
		cred   *trust.Credential
		reason string
	}{
		{"unfederated trust domain", issueSVID(t, rogue, "spiffe://rogue.shop/ns/shop/sa/frontend", time.Hour), "trust domain is not federated"},
		{"expired certificate", expired, "certificate has expired"},
		{"ID the authorizer does not allow", issueSVID(t, west.Authority(), "spiffe://west.shop/ns/shop/sa/intruder", time.Hour), "unexpected ID"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := handshake(ctx, addr, client(c.cred, west.Bundles())); err == nil {
				t.Fatalf("east's server accepted %s", c.cred.ID())
			}
			l := serverLog.wantLogged(t, `msg="refused TLS client"`, "peer_id="+c.cred.ID().String()+" ", c.reason)
			t.Logf("logged: %s", l)
		})
	}

	// The dialing side refuses and logs as well: a server of an
	// unfederated trust domain.
	rogueAddr := startWorkload(t, trust.MTLSServer(issueSVID(t, rogue, "spiffe://rogue.shop/ns/shop/sa/order", time.Hour), trust.NewBundleSet(rogue.Bundle(), west.Authority().Bundle()), tlsconfig.AuthorizeAny(), nil))
	conf := trust.MTLSClient(issueSVID(t, west.Authority(), westFrontend.String(), time.Hour), west.Bundles(), tlsconfig.AuthorizeAny(), clientLog.logger())
	if _, err := handshake(ctx, rogueAddr, conf); err == nil {
		t.Fatal("west's client accepted a server of rogue.shop")
	}
	t.Logf("logged: %s", clientLog.wantLogged(t, `msg="refused TLS server"`, "peer_id=spiffe://rogue.shop/ns/shop/sa/order ", "trust domain is not federated"))

	// The refusals did not disturb the federated path.
	if _, err := handshake(ctx, addr, client(issueSVID(t, central.Authority(), centralFrontend.String(), time.Hour), central.Bundles())); err != nil {
		t.Fatalf("central to east after the refusals: %v", err)
	}
}
