package gossip_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// warnings records the warnings logged, by message.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, r.Message)
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

// count returns how many warnings contained s.
func (w *warnings) count(s string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.msgs {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}

func newCA(t *testing.T, td spiffeid.TrustDomain) *trust.CA {
	t.Helper()
	ca, err := trust.NewCA(td, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// rawDial opens a gossip connection with cred and sends first: what a
// member that does not follow the protocol can send.
func rawDial(t *testing.T, cred *trust.Credential, ca *trust.CA, addr string, first []byte) *tls.Conn {
	t.Helper()
	td := cred.ID().TrustDomain()
	c, err := tls.Dial("tcp", addr, tlsconfig.MTLSClientConfig(cred, trust.Bundle(td, ca.Cert), tlsconfig.AuthorizeAny()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(first); err != nil {
		t.Fatal(err)
	}
	return c
}

// closedWithin reports whether the peer closes c within d.
func closedWithin(c *tls.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	t, ok := err.(interface{ Timeout() bool })
	return ok && t.Timeout()
}

func frame(b []byte) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...) }

// A member may gossip only as a node of its own cluster: dialing as
// another's node, or answering a dial for another's node, is dropped,
// counted against the peer and logged once.
func TestTransportDropsForeignClaims(t *testing.T) {
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("shop")
	ca := newCA(t, td)
	logged := &warnings{}
	west := startTransport(t, issue(t, ca, membership.ClusterID(td, "west")), ca, func(c *gossip.TransportConfig) {
		c.Log = slog.New(logged)
	})
	central := issue(t, ca, membership.ClusterID(td, "central"))

	// central dials west twice, naming itself east's node.
	for range 2 {
		c := rawDial(t, central, ca, west.Addr().String(), append(gossip.Preamble(gossip.ConnPackets, "east-1a2b3c"), frame([]byte("alive east"))...))
		if !closedWithin(c, 5*time.Second) {
			t.Fatal("a connection naming another cluster's node stayed open")
		}
	}
	// Honest, it is served.
	honest := rawDial(t, central, ca, west.Addr().String(), append(gossip.Preamble(gossip.ConnPackets, "central-1a2b3c"), frame([]byte("hello"))...))
	if p := recvPacket(t, west); string(p.Buf) != "hello" {
		t.Fatalf("the honest connection delivered %q", p.Buf)
	}
	honest.Close()
	select {
	case p := <-west.PacketCh():
		t.Fatalf("a foreign claim reached memberlist: %q", p.Buf)
	default:
	}

	// west dials a node of east's and central answers: west refuses it.
	centralTr := startTransport(t, central, ca, func(*gossip.TransportConfig) {})
	if _, err := west.WriteToAddress([]byte("ping"), memberlist.Address{Addr: centralTr.Addr().String(), Name: "east-3c2b1a"}); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 5*time.Second, "west to drop its packet for east's node", func() bool {
		return west.Stats().Dropped[gossip.DroppedUnreachable] == 1
	})
	select {
	case p := <-centralTr.PacketCh():
		t.Fatalf("west sent a packet to central's listener as east's node: %q", p.Buf)
	default:
	}

	st := west.Stats()
	if got := st.ForeignClaims["central"]; got != 3 {
		t.Errorf("foreign claims of central counted %d, want 3 (%v)", got, st.ForeignClaims)
	}
	if got := st.Closed[gossip.ClosedForeignClaim]; got != 3 {
		t.Errorf("connections closed for a foreign claim: %d, want 3", got)
	}
	if got := logged.count("claims another cluster's node"); got != 1 {
		t.Errorf("the foreign claims were logged %d times, want once per peer", got)
	}
}

// revocations is a removal list a test changes.
type revocations struct {
	mu      sync.Mutex
	removed map[string]time.Time
}

func (r *revocations) revoke(cluster string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed[cluster] = time.Now()
}

func (r *revocations) revoked(cluster string, cert *x509.Certificate) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.removed[cluster]
	return ok && cert.NotBefore.Before(at)
}

// Once a cluster is removed, its open connections close within seconds,
// both ways, and it can open no new one.
func TestTransportClosesRemovedClusters(t *testing.T) {
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("shop")
	ca := newCA(t, td)
	removals := &revocations{removed: make(map[string]time.Time)}
	west := startTransport(t, issue(t, ca, membership.ClusterID(td, "west")), ca, func(c *gossip.TransportConfig) {
		c.Revoked = removals.revoked
	})
	centralCred := issue(t, ca, membership.ClusterID(td, "central"))
	central := startTransport(t, centralCred, ca, func(*gossip.TransportConfig) {})
	east := testTransport(t, ca, membership.ClusterID(td, "east"))
	toWest := memberlist.Address{Addr: west.Addr().String(), Name: "west-0a0b0c"}
	for _, from := range []*gossip.Transport{central, east} {
		if _, err := from.WriteToAddress([]byte("hello"), toWest); err != nil {
			t.Fatal(err)
		}
		recvPacket(t, west)
	}
	if _, err := west.WriteToAddress([]byte("hello"), memberlist.Address{Addr: central.Addr().String(), Name: "central-0a0b0c"}); err != nil {
		t.Fatal(err)
	}
	recvPacket(t, central)
	// west's packet to central went back on the connection central dialed.
	if open := west.Stats().Open; open["central"] != 1 || open["east"] != 1 {
		t.Fatalf("open connections %v, want central 1 (carrying both ways) and east 1", open)
	}

	removals.revoke("central")
	start := time.Now()
	fedtest.Eventually(t, 5*time.Second, "central's connections to close", func() bool { return west.Stats().Open["central"] == 0 })
	t.Logf("central's connections closed %s after its removal", time.Since(start).Round(time.Millisecond))
	if open := west.Stats().Open; open["east"] != 1 {
		t.Errorf("east's connection closed too: %v", open)
	}
	// New connections either way are refused.
	refused := west.Stats().Closed[gossip.ClosedRevoked]
	if _, err := west.WriteToAddress([]byte("again"), memberlist.Address{Addr: central.Addr().String(), Name: "central-0a0b0c"}); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 5*time.Second, "west to refuse removed central's listener", func() bool {
		st := west.Stats()
		return st.Closed[gossip.ClosedRevoked] > refused && st.Dropped[gossip.DroppedUnreachable] == 1
	})
	select {
	case p := <-central.PacketCh():
		t.Fatalf("west sent removed central %q", p.Buf)
	default:
	}
	c := rawDial(t, centralCred, ca, west.Addr().String(), append(gossip.Preamble(gossip.ConnPackets, "central-1a2b3c"), frame([]byte("after removal"))...))
	if !closedWithin(c, 5*time.Second) {
		t.Error("removed central's new connection stayed open")
	}
	select {
	case p := <-west.PacketCh():
		t.Fatalf("removed central delivered %q", p.Buf)
	default:
	}
	if got := west.Stats().Closed[gossip.ClosedRevoked]; got < 3 {
		t.Errorf("closed or refused for the removal: %d, want at least 3", got)
	}
}

// A connection that sends nothing is closed after the idle timeout; one
// that sends heartbeats is kept.
func TestTransportClosesIdleConnections(t *testing.T) {
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("shop")
	ca := newCA(t, td)
	const idle = 400 * time.Millisecond
	west := startTransport(t, issue(t, ca, membership.ClusterID(td, "west")), ca, func(c *gossip.TransportConfig) {
		c.IdleTimeout = idle
	})
	east := testTransport(t, ca, membership.ClusterID(td, "east"))
	toWest := memberlist.Address{Addr: west.Addr().String(), Name: "west-0a0b0c"}

	// east heartbeats for three idle timeouts: its connection stays.
	tick := time.NewTicker(idle / 4)
	defer tick.Stop()
	for deadline := time.Now().Add(3 * idle); time.Now().Before(deadline); <-tick.C {
		if _, err := east.WriteToAddress(nil, toWest); err != nil {
			t.Fatal(err)
		}
	}
	if st := west.Stats(); st.Open["east"] != 1 || st.Closed[gossip.ClosedIdle] != 0 {
		t.Fatalf("a connection carrying heartbeats: open %v, closed idle %d", st.Open, st.Closed[gossip.ClosedIdle])
	}
	select {
	case p := <-west.PacketCh():
		t.Fatalf("a heartbeat reached memberlist as %q", p.Buf)
	default:
	}
	// Then it falls silent: closed.
	start := time.Now()
	fedtest.Eventually(t, 5*time.Second, "the silent connection to close", func() bool { return west.Stats().Open["east"] == 0 })
	if waited := time.Since(start); waited < idle/2 {
		t.Errorf("closed %s after falling silent, before the idle timeout of %s", waited, idle)
	}
	// A connection that never sends a frame after its preamble, too.
	silent := rawDial(t, issue(t, ca, membership.ClusterID(td, "central")), ca, west.Addr().String(), gossip.Preamble(gossip.ConnPackets, "central-1a2b3c"))
	if !closedWithin(silent, 5*time.Second) {
		t.Fatal("a silent connection stayed open")
	}
	if got := west.Stats().Closed[gossip.ClosedIdle]; got != 2 {
		t.Errorf("closed for idleness: %d, want 2", got)
	}
}
