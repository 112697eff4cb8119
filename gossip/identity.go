package gossip

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/federate/federate/membership"
)

// Gossip connections are bound to the identity in the peer's certificate.
// A node name says which identity may use it: "<cluster>-<suffix>" belongs
// to the cluster's credential, "hub-<suffix>" to the hub's. The dialing
// side names its own node in the connection's preamble, and the dialed
// side must present the identity of the node it was dialed as; a peer
// that names a node of another identity makes a foreign claim: the
// connection is closed, the claim counted and the peer logged once.
//
// Liveness never rests on what a peer says about others: a cluster is
// confirmed only by frames that arrive on connections authenticated as
// that cluster (see heartbeat.go). Node names and digests relayed through
// third parties spread membership and versions, which are hints: records
// are signed, and fetches check the server's identity.

// Reasons a gossip connection is refused or closed, as counted in
// Stats.Closed.
const (
	ClosedForeignClaim = "foreign_claim" // it named a node of another identity
	ClosedRevoked      = "revoked"       // its cluster was removed, or its certificate expired
	ClosedIdle         = "idle"          // it sent nothing for the idle timeout
)

var (
	errForeignClaim = errors.New("gossip: peer claims a node of another identity")
	errRevoked      = errors.New("gossip: peer's credential is revoked or expired: its cluster was removed from the federation")
)

// peer is the authenticated identity at the other end of a connection.
type peer struct {
	id      spiffeid.ID
	cluster string // "" for the hub
	leaf    *x509.Certificate
}

// name is how metrics and logs name the peer: its cluster, or "hub".
func (p peer) name() string {
	if p.cluster == "" {
		return hubNodeBase
	}
	return p.cluster
}

// hubNodeBase is the base of every hub's node name.
const hubNodeBase = "hub"

// mayUse reports whether p may speak as the memberlist node named node.
func (p peer) mayUse(node string) bool {
	return memberBase(node) == p.name()
}

// identityOf is the identity a node name belongs to: its cluster's, or
// the hub's for a node of a hub's digest.
func identityOf(td spiffeid.TrustDomain, d Digest) spiffeid.ID {
	if d.Cluster == "" {
		return membership.HubID(td)
	}
	return membership.ClusterID(td, d.Cluster)
}

// guard authenticates gossip connections and keeps what it learned: when
// each identity was last heard from, and what it refused.
type guard struct {
	td      spiffeid.TrustDomain
	revoked func(cluster string, cert *x509.Certificate) bool
	log     *slog.Logger

	mu      sync.Mutex // guards the fields below
	heard   map[spiffeid.ID]time.Time
	claims  map[string]uint64 // foreign claims, by peer name
	closed  map[string]uint64 // by reason
	dropped map[string]uint64 // packets, by reason (packets.go)
	warned  map[string]bool   // peers logged for a foreign claim
}

func newGuard(td spiffeid.TrustDomain, revoked func(string, *x509.Certificate) bool, log *slog.Logger) *guard {
	return &guard{
		td: td, revoked: revoked, log: log,
		heard: make(map[spiffeid.ID]time.Time), claims: make(map[string]uint64),
		closed: make(map[string]uint64), dropped: make(map[string]uint64), warned: make(map[string]bool),
	}
}

// authenticate returns the verified peer of a completed handshake, or an
// error if its credential is no longer good.
func (g *guard) authenticate(cs tls.ConnectionState, now time.Time) (peer, error) {
	if len(cs.PeerCertificates) == 0 {
		return peer{}, errors.New("gossip: peer presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return peer{}, fmt.Errorf("gossip: peer certificate: %w", err)
	}
	p := peer{id: id, cluster: membership.ClusterOf(g.td, id), leaf: leaf}
	if !g.valid(p, now) {
		g.count(ClosedRevoked)
		return p, fmt.Errorf("%w (%s)", errRevoked, id)
	}
	return p, nil
}

// valid reports whether p's credential may still gossip: unexpired, and
// not issued to a cluster before its removal.
func (g *guard) valid(p peer, now time.Time) bool {
	if now.After(p.leaf.NotAfter) {
		return false
	}
	return p.cluster == "" || g.revoked == nil || !g.revoked(p.cluster, p.leaf)
}

// claim checks that p may speak as node; a foreign claim is counted and
// logged once per peer. An empty node (a seed given without its name)
// claims nothing.
func (g *guard) claim(p peer, node, direction string) error {
	if node == "" || p.mayUse(node) {
		return nil
	}
	g.mu.Lock()
	g.claims[p.name()]++
	g.closed[ClosedForeignClaim]++
	first := !g.warned[p.name()]
	g.warned[p.name()] = true
	g.mu.Unlock()
	if first {
		g.log.Warn("gossip peer claims another cluster's node; its claims are dropped",
			"peer_id", p.id.String(), "claimed_node", node, "direction", direction)
	}
	return fmt.Errorf("%w: %s spoke as node %q", errForeignClaim, p.id, node)
}

func (g *guard) count(reason string) {
	g.mu.Lock()
	g.closed[reason]++
	g.mu.Unlock()
}

// drop counts n packets dropped before they were sent.
func (g *guard) drop(reason string, n int) {
	g.mu.Lock()
	g.dropped[reason] += uint64(n)
	g.mu.Unlock()
}

// hear records that p was just heard from directly.
func (g *guard) hear(p peer, now time.Time) {
	g.mu.Lock()
	if now.After(g.heard[p.id]) {
		g.heard[p.id] = now
	}
	g.mu.Unlock()
}

// lastHeard returns when id was last heard from directly, or zero.
func (g *guard) lastHeard(id spiffeid.ID) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.heard[id]
}

// Stats is what the gossip layer refused, for metrics and tests.
type Stats struct {
	// ForeignClaims counts claims dropped for another identity's node, by
	// the claiming peer: its cluster, or "hub".
	ForeignClaims map[string]uint64
	// Closed counts connections refused or closed, by reason (Closed*).
	Closed map[string]uint64
	// Open counts open gossip connections, both ways, by peer.
	Open map[string]int
	// Dropped counts outgoing packets dropped before they were sent, by
	// reason (Dropped*).
	Dropped map[string]uint64
}

func (g *guard) stats() Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := Stats{
		ForeignClaims: make(map[string]uint64), Closed: make(map[string]uint64),
		Open: make(map[string]int), Dropped: make(map[string]uint64),
	}
	for k, v := range g.claims {
		s.ForeignClaims[k] = v
	}
	for k, v := range g.closed {
		s.Closed[k] = v
	}
	for k, v := range g.dropped {
		s.Dropped[k] = v
	}
	return s
}
