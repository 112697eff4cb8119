package gossip

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/trust"
	"github.com/hashicorp/memberlist"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Config configures the gossip layer.
type Config struct {
	// Bind is the TCP host:port to listen on; port 0 picks one.
	Bind string
	// Advertise is the address other members dial, an IP host and a port.
	// A cluster behind an east-west gateway advertises the gateway, which
	// routes gossip to Bind; empty means the bound address.
	Advertise string
	// Seeds are gossip addresses to join, each "host:port" or
	// "node/host:port" (the node name selects the cluster behind a
	// gateway); joins are retried until one works and repeated while a
	// seed is missing from the membership.
	Seeds []string
	// Credential and CA authenticate members to each other over mTLS; the
	// hub and Member fill them in from their own.
	Credential *trust.Credential
	CA         []*x509.Certificate
	// Label separates meshes that share addresses and keys.
	Label string
	// Profile is "wan" (the default) or "lan"; LAN detects failures faster.
	Profile string
	// RejoinInterval is how often missing seeds are joined again.
	RejoinInterval time.Duration
	// Revoked, if set, reports whether a cluster's credential was revoked
	// by its removal from the federation: such a peer's connections are
	// refused, and closed within a second once the removal is known.
	Revoked func(cluster string, cert *x509.Certificate) bool
	// HeartbeatInterval is how often a heartbeat goes to every member
	// (default DefaultHeartbeatInterval); a member is alive while it was
	// heard from, directly, within ConfirmWindow heartbeats.
	HeartbeatInterval time.Duration
	// IdleTimeout closes an inbound connection that sends nothing for
	// that long (default DefaultIdleTimeout); it must exceed
	// ConfirmWindow heartbeats.
	IdleTimeout time.Duration
	Logger      *slog.Logger
}

// Defaults of Config.
const (
	// DefaultRejoinInterval heals partitions memberlist does not heal itself.
	DefaultRejoinInterval    = 10 * time.Second
	DefaultHeartbeatInterval = time.Second
	DefaultIdleTimeout       = 30 * time.Second
	// ConfirmWindow is how many heartbeat intervals a member stays alive
	// without being heard from: a lost or late heartbeat is not a failure.
	ConfirmWindow = 3
)

// MemberState is one gossip member as memberlist sees it now.
type MemberState struct {
	Digest
	// State is "alive" while the member's identity (its cluster's
	// credential, or the hub's) was heard from directly within the
	// confirmation window, else "suspect"; dead and departed members are
	// absent.
	State string
	Addr  string
	// HeardAgo is how long ago the member's identity was last heard from
	// directly; negative if never.
	HeardAgo time.Duration
}

// Node runs memberlist for one member and tracks the newest digest of
// every cluster. Callbacks from memberlist never block: they hand copies to
// the goroutine in Run.
type Node struct {
	cfg       Config
	td        spiffeid.TrustDomain
	guard     *guard
	log       *slog.Logger
	onDigest  func(Digest)
	inbox     chan []byte
	rejoinNow chan struct{}
	queue     *memberlist.TransmitLimitedQueue

	mu        sync.Mutex // guards the fields below
	local     Digest
	newest    map[string]Digest      // by member name
	members   map[string]MemberState // live members, by name, from memberlist events
	aliveMeta map[string]string      // the meta NotifyAlive last accepted, by node name
	metaSent  Digest                 // the local digest, versions left out, last put in node meta
	ml        *memberlist.Memberlist
	transport *tlsTransport
	addr      string // advertised
	listen    string
	ready     chan struct{}
}

// New returns a gossip layer; onDigest runs, serialized, for every
// digest that is newer than any seen before for its member.
//
// The member's node name is local.Name with a suffix unique to this start:
// memberlist ignores a node that comes back under a dead node's name at
// the same address, so a restarted hub or control plane joins as a new
// node, and the dead one is reaped.
func New(cfg Config, local Digest, onDigest func(Digest)) *Node {
	var suffix [3]byte
	_, _ = rand.Read(suffix[:])
	local.Name += "-" + hex.EncodeToString(suffix[:])
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RejoinInterval == 0 {
		cfg.RejoinInterval = DefaultRejoinInterval
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = max(DefaultIdleTimeout, 2*ConfirmWindow*cfg.HeartbeatInterval)
	}
	log := cfg.Logger.With("component", "gossip")
	var td spiffeid.TrustDomain
	if cfg.Credential != nil {
		td = cfg.Credential.ID().TrustDomain()
	}
	g := &Node{
		cfg:       cfg,
		td:        td,
		guard:     newGuard(td, cfg.Revoked, log),
		log:       log,
		onDigest:  onDigest,
		inbox:     make(chan []byte, 1024),
		rejoinNow: make(chan struct{}, 1),
		local:     local,
		newest:    make(map[string]Digest),
		members:   make(map[string]MemberState),
		aliveMeta: make(map[string]string),
		ready:     make(chan struct{}),
	}
	g.queue = &memberlist.TransmitLimitedQueue{NumNodes: g.numNodes, RetransmitMult: digestRetransmitMult}
	return g
}

func (g *Node) numNodes() int {
	g.mu.Lock()
	ml := g.ml
	g.mu.Unlock()
	if ml == nil {
		return 1
	}
	return ml.NumMembers()
}

// Ready is closed once memberlist listens; Addr is valid from then on.
func (g *Node) Ready() <-chan struct{} { return g.ready }

// Addr returns the gossip address others should join.
func (g *Node) Addr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.addr
}

// Seed returns "node/addr", how other members join this one: the node
// name lets them reach it through its cluster's gateway.
func (g *Node) Seed() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.local.Name + "/" + g.addr
}

// ListenAddr returns the address gossip listens on: where a gateway that
// is advertised in its place sends gossip connections.
func (g *Node) ListenAddr() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.listen
}

// Run starts memberlist and serves until ctx is done, then leaves the mesh.
func (g *Node) Run(ctx context.Context) error {
	conf, err := g.memberlistConfig()
	if err != nil {
		return err
	}
	transport := conf.Transport.(*tlsTransport)
	ml, err := memberlist.Create(conf)
	if err != nil {
		transport.Shutdown()
		return fmt.Errorf("gossip: start gossip on %s: %w", g.cfg.Bind, err)
	}
	g.mu.Lock()
	g.ml = ml
	g.metaSent = g.local
	g.metaSent.Incarnation, g.metaSent.Counter = 0, 0
	g.transport = transport
	n := ml.LocalNode()
	g.addr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	g.listen = transport.Addr().String()
	g.mu.Unlock()
	close(g.ready)
	g.log.Info("gossip listening", "listen", g.listen, "advertise", g.Addr(), "name", conf.Name)
	defer func() {
		_ = ml.Leave(time.Second)
		_ = ml.Shutdown()
	}()

	// Joins dial seeds and may wait seconds on one that is frozen: they run
	// on their own goroutine, never on the one that applies digests.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { g.rejoinLoop(ctx) })
	wg.Go(func() { g.heartbeatLoop(ctx) })
	if adv := transport.advertise; adv.String() != g.ListenAddr() {
		// Behind a gateway: sync again each time our address leads back
		// to us, since what was sent to us meanwhile is lost.
		wg.Go(func() { g.watchReachable(ctx, ml, conf.Name, adv) })
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case b := <-g.inbox:
			g.receive(b)
		}
	}
}

// rejoinLoop joins the seeds that are not members now, at start and every
// RejoinInterval, and all of them when RejoinNow asks.
func (g *Node) rejoinLoop(ctx context.Context) {
	g.rejoin(false)
	tick := time.NewTicker(g.cfg.RejoinInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			g.rejoin(false)
		case <-g.rejoinNow:
			g.rejoin(true)
		}
	}
}

// Intervals between checks that this member's advertised gossip address
// leads back to it: often while it does not, to sync soon after it does.
const (
	reachableCheckInterval   = time.Second
	unreachableCheckInterval = 200 * time.Millisecond
)

// watchReachable pings this member at its advertised address until ctx
// is done, and joins every seed again (a push/pull with each) whenever the
// address starts leading back here. Until then, behind a gateway that is
// not up or not routing to us yet, every packet sent to us was lost:
// among them the broadcasts of members that joined after us, which we
// would otherwise learn of only at the next push/pull, 30 to 60 s later.
// Such sends fail without marking us suspect, so others see us alive.
func (g *Node) watchReachable(ctx context.Context, ml *memberlist.Memberlist, name string, addr *net.TCPAddr) {
	reachable := false
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		_, err := ml.Ping(name, addr)
		if err == nil && !reachable {
			g.log.Debug("gossip address leads back here: syncing with the seeds", "advertise", addr)
			g.RejoinNow()
		}
		reachable = err == nil
		wait := reachableCheckInterval
		if !reachable {
			wait = unreachableCheckInterval
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RejoinNow joins every seed again soon, members or not: a seed that
// restarted under a new node name is found without waiting for its old
// node to be declared dead.
func (g *Node) RejoinNow() { signal(g.rejoinNow) }

// rejoin joins every seed that is not a member now, or all of them.
func (g *Node) rejoin(all bool) {
	g.mu.Lock()
	ml := g.ml
	present := make(map[string]bool)
	for _, m := range g.members {
		present[m.Addr] = true
	}
	g.mu.Unlock()
	var missing []string
	for _, s := range g.cfg.Seeds {
		addr := s[strings.IndexByte(s, '/')+1:]
		if (all || !present[addr]) && addr != g.Addr() {
			missing = append(missing, s)
		}
	}
	// One seed at a time would let a frozen one hold up the others.
	var wg sync.WaitGroup
	for _, seed := range missing {
		wg.Go(func() {
			if _, err := ml.Join([]string{seed}); err != nil {
				g.log.Debug("gossip join failed; will retry", "seed", seed, "err", err)
			}
		})
	}
	wg.Wait()
}

// SetLocal replaces this member's digest and spreads it; its name is kept.
//
// The digest goes straight to every member, then by gossip. Gossip alone
// sends a broadcast a fixed number of times to members picked at random,
// dead and frozen ones among them (memberlist gossips to a dead node for
// a while): now and then a member was never picked, or only as a packet
// that was lost, and learned of the change only at the next push/pull,
// 30 s later. Gossip still carries it to members this one does not know.
//
// memberlist's node meta is updated only when what the digest says beyond
// the slice version changed (API, gateway, bundle): an update is an alive
// message that every member relays and decodes, and a hundred members
// changing their slices 20 times a second spent more on those than on
// the digests themselves. Versions travel in the digests above and in
// every push/pull (LocalState).
func (g *Node) SetLocal(d Digest) {
	g.mu.Lock()
	d.Name = g.local.Name
	g.local = d
	ml := g.ml
	meta := d
	meta.Incarnation, meta.Counter = 0, 0
	metaChanged := meta != g.metaSent
	if ml != nil && metaChanged {
		g.metaSent = meta
	}
	g.mu.Unlock()
	b := d.encode()
	g.queue.QueueBroadcast(digestBroadcast{name: d.Name, msg: b})
	if ml != nil {
		for _, to := range g.memberAddrs() {
			// Queued per member (packets.go): returns at once.
			if err := ml.SendToAddress(to, b); err != nil {
				g.log.Debug("gossip digest not sent", "to", to.String(), "err", err)
			}
		}
		if !metaChanged {
			return
		}
		if err := ml.UpdateNode(time.Second); err != nil {
			g.log.Debug("gossip meta update", "err", err)
		}
	}
}

// Members returns the live members with their newest digests, alive if
// their identity was heard from directly of late. memberlist's own node
// list is not safe to read outside its locks, so membership is tracked
// from its events.
func (g *Node) Members() []MemberState {
	g.mu.Lock()
	out := make([]MemberState, 0, len(g.members))
	for name, m := range g.members {
		if d, ok := g.newest[name]; ok {
			m.Digest = d
		}
		m.Name = name
		out = append(out, m)
	}
	g.mu.Unlock()
	now := time.Now()
	window := ConfirmWindow * g.cfg.HeartbeatInterval
	for i, m := range out {
		m.State, m.HeardAgo = StateSuspect, -1
		if g.td.IsZero() { // no credential: Run refuses to start
			out[i] = m
			continue
		}
		if heard := g.guard.lastHeard(identityOf(g.td, m.Digest)); !heard.IsZero() {
			m.HeardAgo = max(0, now.Sub(heard))
			if m.HeardAgo < window {
				m.State = StateAlive
			}
		}
		out[i] = m
	}
	return out
}

// Stats returns what the gossip layer refused and the connections open.
func (g *Node) Stats() Stats {
	s := g.guard.stats()
	g.mu.Lock()
	t := g.transport
	g.mu.Unlock()
	if t != nil {
		s.Open = t.openByPeer()
	}
	return s
}

// receive merges one digest. A newer one is passed on to the application
// and re-queued, since memberlist does not forward user broadcasts.
func (g *Node) receive(b []byte) {
	d, err := DecodeDigest(b)
	if err != nil {
		g.log.Debug("dropped gossip message", "err", err)
		return
	}
	g.mu.Lock()
	if d.Name == g.local.Name {
		g.mu.Unlock()
		return
	}
	old, seen := g.newest[d.Name]
	newer := !seen || registry.Compare(d.Version(), old.Version()) > 0 ||
		d.BundleSequence > old.BundleSequence || d.API != old.API || d.Gateway != old.Gateway
	if newer {
		g.newest[d.Name] = d
	}
	g.mu.Unlock()
	if !newer {
		return
	}
	g.queue.QueueBroadcast(digestBroadcast{name: d.Name, msg: b})
	if g.onDigest != nil {
		g.onDigest(d)
	}
}

func (g *Node) deliver(b []byte) {
	select {
	case g.inbox <- b:
	default: // full: push/pull and node meta catch up later
	}
}

// debugWriter passes memberlist's own log lines to slog at debug level.
type debugWriter struct{ log *slog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}

// signal wakes the goroutine waiting on ch, unless a wake-up is pending.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
