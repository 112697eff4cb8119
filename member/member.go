package member

import (
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/probe"
	"github.com/federate/federate/internal/retry"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

const (
	metaIncarnation = "incarnation"
	// peerFetchDelay gives the hub stream a head start before a member
	// fetches a newer version it heard of by gossip from a peer.
	peerFetchDelay = 300 * time.Millisecond
	// While the hub stream brought something within hubFlowingWindow,
	// the hub is working, if behind: it gets laggingHubFetchDelay. When a
	// whole fleet publishes at once (a fleet restart, every cluster
	// joining) the hub's fan-out lags by more than peerFetchDelay, and
	// every member then fetched every change from its owner as well: a
	// connection and TLS handshake each, on top of the load that made the
	// hub lag, which lagged it further. A frozen hub brings nothing, and
	// is passed over after peerFetchDelay, as before.
	hubFlowingWindow     = time.Second
	laggingHubFetchDelay = time.Second
	// Retries against the hub and peers wait under firstBackoff first,
	// then twice as long after each failure, up to under maxBackoff.
	firstBackoff = 100 * time.Millisecond
	maxBackoff   = 5 * time.Second
	// Failed credential renewals wait longer: the credential has half its
	// life left.
	firstRenewBackoff = time.Second
	maxRenewBackoff   = time.Minute
	// maxConnectBackoff bounds gRPC's wait between reconnect attempts,
	// which by default grows to two minutes: it bounds how long members
	// take to find a hub that was down for a while.
	maxConnectBackoff = 500 * time.Millisecond
)

// Config configures the federation side of a control plane.
type Config struct {
	Mesh    string
	Cluster string
	// Hub is the hub's gRPC address.
	Hub string
	// CA holds the hub CA certificates that every credential chains to.
	CA         []*x509.Certificate
	Credential *trust.Credential
	// CredentialPath, when set, is where a renewed credential is saved.
	CredentialPath string
	Store          *store.Store
	// Listen is the address of this member's Registry API (peer fetch and
	// status); Advertise (default: the bound address) is what peers dial:
	// the cluster's gateway when there is one, which routes the internal
	// name controlplane.<cluster>.federate.internal to Listen.
	Listen    string
	Advertise string
	Gossip    gossip.Config
	Timers    gossip.Timers
	Logger    *slog.Logger
	Now       func() time.Time
	// OnApply, if set, is called after remote records were applied. It
	// must not call back into the Member.
	OnApply func([]*registry.Record)

	// TrustDomain is the cluster's own trust domain; the default is
	// <cluster>.<mesh>. It must match what the hub put in the credential.
	TrustDomain string
	// PluginCADir, if set, holds Istio cacerts files for the cluster's CA;
	// otherwise a root is generated on first start and kept in the store.
	PluginCADir string
	// MaxSVIDTTL caps workload SVID lifetimes, and so how long a root
	// rotation keeps the old root (default trust.MaxSVIDTTL).
	MaxSVIDTTL time.Duration
	// BundleRefreshHint is published in the bundle (default 5 minutes).
	BundleRefreshHint time.Duration
	// RegisterServices, if set, adds more services (xDS for the gateways)
	// to the member's gRPC server, which gateways and agents reach with
	// SVIDs of the cluster's trust domain.
	RegisterServices func(*grpc.Server)
	// ServerOptions, if set, returns options added after the member's own
	// to its gRPC server, given the server's transport credentials: the
	// control plane wraps them to close unauthenticated and idle
	// connections.
	ServerOptions func(credentials.TransportCredentials) []grpc.ServerOption
	// ServingNames are DNS names and IP addresses the cluster credential
	// should carry beyond the control plane's internal name, for clients
	// that dial the control plane by them (proxyless gRPC verifies the
	// name it dials). A credential without them is renewed at once.
	ServingNames []string
	// PolicyWarnings, if set, adds the routing's warnings to status.
	PolicyWarnings func() []*hubpb.PolicyWarning
	// Imports are the services the member imports (see registry.Scope);
	// nil imports every service. SetImports changes them.
	Imports *registry.Scope
	// NewIncarnation starts a new incarnation on every start, newer than
	// the stored one, instead of continuing it. Replicas of a control
	// plane under leader election each have their own store: a new leader
	// must outrank whatever the previous one published.
	NewIncarnation bool
}

// Member is one cluster's part in the federation: it publishes the
// cluster's slice, keeps every other slice current from the hub or from
// peers, persists what it learned and serves it to peers.
type Member struct {
	hubpb.UnimplementedRegistryServer
	hubpb.UnimplementedControlPlaneServer

	cfg      Config
	td       spiffeid.TrustDomain
	log      *slog.Logger
	set      *registry.Set
	live     *gossip.Liveness
	verifier *registry.Verifier
	gossip   *gossip.Node
	// bundles holds every federated trust domain's bundle: ours, the other
	// members', and those the hub imports.
	bundles   *trust.BundleSet
	authority *trust.Authority // set by load

	bundleMu   sync.Mutex // guards the encoded bundle cache
	bundleJSON []byte
	bundleSeq  uint64

	// maintained beats on every turn of the maintenance loop; federated
	// is set once the hub synced, or a store or a peer brought state.
	maintained probe.Heartbeat
	federated  atomic.Bool
	// peerFetches counts the fetches asked of peers.
	peerFetches atomic.Int64

	// namesAsked is set once a renewal asked for the serving names; only
	// the sync loop touches it.
	namesAsked bool
	// renewRetry spaces failed credential renewals; renewRetryAt is when
	// the next may run. Only the sync loop touches them.
	renewRetry   *retry.Backoff
	renewRetryAt time.Time

	publishNow   chan struct{}
	fetchNow     chan struct{}
	advertiseNow chan struct{}
	ready        chan struct{}
	listener     net.Listener

	// writeMu serializes the store writes with the changes of the set they
	// make, so that the set never runs ahead of the file; it is held across
	// an fsync and so never under mu.
	writeMu sync.Mutex
	// held is the scope the stored records of other clusters are whole
	// for, up to the set's versions; guarded by writeMu.
	held *registry.Scope
	// storeFailing is the store write error last logged, until a write
	// succeeds; guarded by writeMu.
	storeFailing error

	mu            sync.Mutex // guards the fields below; never held across I/O
	incarnation   uint64
	counter       uint64
	acked         *registry.Version // newest own version the hub confirmed
	hubSynced     bool
	hubHeard      time.Time            // when the hub stream last brought anything
	hubReplica    string               // the address the synced stream comes from
	due           map[string]time.Time // cluster -> when to fetch from peers
	changed       chan struct{}        // closed on the next change of the view
	external      map[spiffeid.TrustDomain]*externalState
	conns         map[string]*grpc.ClientConn
	hubOrder      string                  // guarded by mu: see hubAddr
	hubsLearned   []string                // the hub's replicas, as it named them last
	refusedLogged time.Time               // when the hub's refusal was last logged; zero once it accepts
	scope         *registry.Scope         // what we import; nil: every service
	restream      context.CancelCauseFunc // ends the current hub stream
}

// New validates cfg; it does no I/O.
func New(cfg Config) (*Member, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.Mesh)
	if err != nil {
		return nil, fmt.Errorf("member: mesh name %q: %w", cfg.Mesh, err)
	}
	if err := registry.ValidClusterName(cfg.Cluster); err != nil {
		return nil, err
	}
	if cfg.Credential == nil || cfg.Store == nil || len(cfg.CA) == 0 {
		return nil, errors.New("member: a member needs a credential, the hub CA and a store: run 'federate join' first")
	}
	if got := cfg.Credential.ID(); got != membership.ClusterID(td, cfg.Cluster) {
		return nil, fmt.Errorf("member: credential is for %s, not cluster %q", got, cfg.Cluster)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = registry.DefaultTrustDomain(cfg.Cluster, cfg.Mesh)
	}
	if _, err := spiffeid.TrustDomainFromString(cfg.TrustDomain); err != nil {
		return nil, fmt.Errorf("member: trust domain %q: %w", cfg.TrustDomain, err)
	}
	m := &Member{
		cfg:          cfg,
		td:           td,
		log:          cfg.Logger.With("component", "member", "cluster", cfg.Cluster),
		set:          registry.NewSet(true),
		live:         gossip.NewLiveness(cfg.Timers, cfg.Now()),
		verifier:     registry.NewVerifier(cfg.Mesh, cfg.CA),
		bundles:      trust.NewBundleSet(),
		publishNow:   make(chan struct{}, 1),
		fetchNow:     make(chan struct{}, 1),
		advertiseNow: make(chan struct{}, 1),
		ready:        make(chan struct{}),
		due:          make(map[string]time.Time),
		renewRetry:   retry.New(firstRenewBackoff, maxRenewBackoff),
		changed:      make(chan struct{}),
		external:     make(map[spiffeid.TrustDomain]*externalState),
		conns:        make(map[string]*grpc.ClientConn),
		scope:        cfg.Imports,
	}
	return m, nil
}

// newBackoff is the jittered backoff of a retry loop against the hub or a
// peer: every member loses a restarted hub at the same moment, and must
// not come back at the same moment.
func newBackoff() *retry.Backoff { return retry.New(firstBackoff, maxBackoff) }

// Ready is closed once the member serves its last-known state.
func (m *Member) Ready() <-chan struct{} { return m.ready }

// Addr returns the Registry API address.
func (m *Member) Addr() string {
	if !m.started() {
		return ""
	}
	return m.listener.Addr().String()
}

// GossipAddr returns this member's advertised gossip address.
func (m *Member) GossipAddr() string {
	if !m.started() {
		return ""
	}
	return m.gossip.Addr()
}

// GossipSeed returns how other members join this one's gossip.
func (m *Member) GossipSeed() string {
	if !m.started() {
		return ""
	}
	return m.gossip.Seed()
}

// GossipListenAddr returns the address gossip listens on.
func (m *Member) GossipListenAddr() string {
	if !m.started() {
		return ""
	}
	return m.gossip.ListenAddr()
}

// started reports whether Run got as far as Ready: the listeners exist.
func (m *Member) started() bool {
	select {
	case <-m.ready:
		return true
	default:
		return false
	}
}

// Run loads the stored state, serves it at once, and keeps it in sync until
// ctx is done.
func (m *Member) Run(ctx context.Context) error {
	if err := m.load(ctx); err != nil {
		return err
	}
	if err := m.loadImports(ctx); err != nil {
		return fmt.Errorf("member: %w", err)
	}
	lis, err := net.Listen("tcp", m.cfg.Listen)
	if err != nil {
		return fmt.Errorf("member: listen on %s: %w", m.cfg.Listen, err)
	}
	m.listener = lis
	if m.cfg.Advertise == "" {
		m.cfg.Advertise = lis.Addr().String()
	}
	// Mesh members present hub-issued credentials; gateways and agents
	// present SVIDs of this cluster's own trust domain.
	bundles := trust.UnionBundles{trust.Bundle(m.td, m.cfg.CA...), m.bundles}
	creds := credentials.NewTLS(trust.ServerTLS(m.cfg.Credential, bundles))
	opts := []grpc.ServerOption{
		grpc.Creds(creds),
		grpc.MaxRecvMsgSize(membership.MaxMessageBytes), grpc.MaxSendMsgSize(membership.MaxMessageBytes),
		membership.ServerKeepalive(), membership.ServerKeepalivePolicy(),
	}
	if m.cfg.ServerOptions != nil {
		opts = append(opts, m.cfg.ServerOptions(creds)...)
	}
	srv := grpc.NewServer(opts...)
	hubpb.RegisterRegistryServer(srv, m)
	hubpb.RegisterControlPlaneServer(srv, m)
	if m.cfg.RegisterServices != nil {
		m.cfg.RegisterServices(srv)
	}
	gcfg := m.cfg.Gossip
	gcfg.Credential, gcfg.CA = m.cfg.Credential, m.cfg.CA
	// A removed cluster's credential gossips no more: the removals come
	// from the hub into the verifier.
	gcfg.Revoked = m.verifier.RevokedCredential
	m.gossip = gossip.New(gcfg, m.digest(), m.onDigest)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(lis) })
	g.Go(func() error {
		<-ctx.Done()
		membership.GracefulStop(srv)
		return nil
	})
	g.Go(func() error { return m.gossip.Run(ctx) })
	select {
	case <-m.gossip.Ready():
	case <-ctx.Done():
		return m.wait(g)
	}
	close(m.ready)
	m.log.Info("member serving", "api", m.Addr(), "gossip", m.GossipAddr(), "clusters", len(m.set.Clusters()))
	for _, loop := range []func(context.Context) error{m.publishLoop, m.advertiseLoop, m.subscribeLoop, m.fetchLoop, m.maintainLoop} {
		g.Go(func() error { return loop(ctx) })
	}
	return m.wait(g)
}

// wait waits for Run's goroutines, then closes the connections to peers
// they used.
func (m *Member) wait(g *errgroup.Group) error {
	err := g.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		c.Close()
	}
	return err
}

// load restores own and remote records, and the incarnation.
func (m *Member) load(ctx context.Context) error {
	recs, err := store.LoadRecords(m.cfg.Store)
	if err != nil {
		return fmt.Errorf("member: %w", err)
	}
	m.set.Apply(recs)
	for _, r := range recs {
		if r.Record.GetCluster() != m.cfg.Cluster {
			m.federated.Store(true) // the last known state of the others
			break
		}
	}
	if err := m.loadTrust(ctx, recs); err != nil {
		return err
	}
	if err := m.loadHubs(); err != nil {
		return err
	}
	inc, err := m.cfg.Store.Get(store.BucketMeta, metaIncarnation)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(inc) == 8 {
		m.incarnation = binary.BigEndian.Uint64(inc)
	}
	if len(inc) != 8 || m.cfg.NewIncarnation {
		// A new store is a new incarnation, so that our fresh records win
		// over whatever an earlier life of this cluster published.
		m.incarnation = max(uint64(m.cfg.Now().UnixNano()), m.incarnation+1)
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], m.incarnation)
		if err := m.cfg.Store.Write(ctx, store.Op{Bucket: store.BucketMeta, Key: metaIncarnation, Value: b[:]}); err != nil {
			return err
		}
	}
	if v := m.set.Version(m.cfg.Cluster); v.GetIncarnation() == m.incarnation {
		m.counter = v.GetCounter()
	}
	return nil
}
