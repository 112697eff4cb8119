package member

import (
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
)

const (
	metaIncarnation = "incarnation"
	// peerFetchDelay gives the hub stream a head start before a member
	// fetches a newer version it heard of by gossip from a peer.
	peerFetchDelay = 300 * time.Millisecond
	maxBackoff     = 5 * time.Second
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
	// PolicyWarnings, if set, adds the routing's warnings to status.
	PolicyWarnings func() []*hubpb.PolicyWarning
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

	publishNow   chan struct{}
	fetchNow     chan struct{}
	advertiseNow chan struct{}
	ready        chan struct{}
	listener     net.Listener

	mu          sync.Mutex // guards the fields below
	incarnation uint64
	counter     uint64
	acked       *registry.Version // newest own version the hub confirmed
	hubSynced   bool
	due         map[string]time.Time // cluster -> when to fetch from peers
	changed     chan struct{}        // closed on the next change of the view
	conns       map[string]*grpc.ClientConn
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
		changed:      make(chan struct{}),
		conns:        make(map[string]*grpc.ClientConn),
	}
	return m, nil
}

// Ready is closed once the member serves its last-known state.
func (m *Member) Ready() <-chan struct{} { return m.ready }

// Addr returns the Registry API address.
func (m *Member) Addr() string { return m.listener.Addr().String() }

// GossipAddr returns this member's advertised gossip address.
func (m *Member) GossipAddr() string { return m.gossip.Addr() }

// GossipSeed returns how other members join this one's gossip.
func (m *Member) GossipSeed() string { return m.gossip.Seed() }

// GossipListenAddr returns the address gossip listens on.
func (m *Member) GossipListenAddr() string { return m.gossip.ListenAddr() }

// Run loads the stored state, serves it at once, and keeps it in sync until
// ctx is done.
func (m *Member) Run(ctx context.Context) error {
	if err := m.load(ctx); err != nil {
		return err
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
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(trust.ServerTLS(m.cfg.Credential, bundles))),
		grpc.MaxRecvMsgSize(membership.MaxMessageBytes), grpc.MaxSendMsgSize(membership.MaxMessageBytes),
		membership.ServerKeepalive(), membership.ServerKeepalivePolicy(),
	)
	hubpb.RegisterRegistryServer(srv, m)
	hubpb.RegisterControlPlaneServer(srv, m)
	if m.cfg.RegisterServices != nil {
		m.cfg.RegisterServices(srv)
	}
	gcfg := m.cfg.Gossip
	gcfg.Credential, gcfg.CA = m.cfg.Credential, m.cfg.CA
	m.gossip = gossip.New(gcfg, m.digest(), m.onDigest)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	run := func(f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				errc <- err
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(lis); err != nil {
			errc <- err
		}
	}()
	run(m.gossip.Run)
	select {
	case <-m.gossip.Ready():
	case err := <-errc:
		cancel()
		srv.Stop()
		wg.Wait()
		return err
	}
	close(m.ready)
	m.log.Info("member serving", "api", m.Addr(), "gossip", m.GossipAddr(), "clusters", len(m.set.Clusters()))
	run(m.publishLoop)
	run(m.advertiseLoop)
	run(m.subscribeLoop)
	run(m.fetchLoop)
	run(m.maintainLoop)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	cancel()
	membership.GracefulStop(srv)
	wg.Wait()
	m.mu.Lock()
	for _, c := range m.conns {
		c.Close()
	}
	m.mu.Unlock()
	return runErr
}

// load restores own and remote records, and the incarnation.
func (m *Member) load(ctx context.Context) error {
	var recs []registry.Verified
	signers := make(registry.SignerCache)
	err := m.cfg.Store.ForEach(store.BucketRecords, func(key string, value []byte) error {
		sr := new(registrypb.SignedRecord)
		if err := proto.Unmarshal(value, sr); err != nil {
			return fmt.Errorf("record %q: %w", key, err)
		}
		rec := new(registrypb.Record)
		if err := proto.Unmarshal(sr.GetRecord(), rec); err != nil {
			return fmt.Errorf("record %q: %w", key, err)
		}
		signers.Intern(sr)
		recs = append(recs, registry.Verified{Record: rec, Signed: sr})
		return nil
	})
	if err != nil {
		return fmt.Errorf("member: load %s: %w", m.cfg.Store.Path(), err)
	}
	m.set.Apply(recs)
	if err := m.loadTrust(ctx, recs); err != nil {
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
	} else {
		// A new store is a new incarnation, so that our fresh records win
		// over whatever an earlier life of this cluster published.
		m.incarnation = uint64(m.cfg.Now().UnixNano())
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

func (m *Member) digest() gossip.Digest {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := gossip.Digest{Name: m.cfg.Cluster, Cluster: m.cfg.Cluster, Incarnation: m.incarnation, Counter: m.counter, API: m.cfg.Advertise}
	if info := m.ownInfo(); info != nil {
		d.BundleSequence = info.GetBundleSequence()
		if gws := info.GetGateways(); len(gws) > 0 {
			d.Gateway = net.JoinHostPort(gws[0].GetAddress(), fmt.Sprint(gws[0].GetPort()))
		}
	}
	return d
}

func (m *Member) ownInfo() *registry.ClusterInfo {
	for _, s := range m.set.Summaries() {
		if s.Cluster == m.cfg.Cluster {
			return s.Info
		}
	}
	return nil
}

// Update replaces this cluster's exported state. Only what changed is
// re-signed, stored and published.
func (m *Member) Update(ctx context.Context, info *registry.ClusterInfo, services []*registry.Service) error {
	info = m.describe(info)
	desired := map[string]proto.Message{registry.InfoKey: info}
	for _, s := range services {
		if _, dup := desired[s.GetHostname()]; dup || s.GetHostname() == "" {
			return fmt.Errorf("member: service hostname %q is empty or listed twice", s.GetHostname())
		}
		desired[s.GetHostname()] = s
	}
	n, err := m.updateLocal(ctx, desired, false)
	if err != nil || n == 0 {
		return err
	}
	// The hub is the fast path; the digest follows on its own goroutine,
	// since spreading it waits for gossip rounds.
	signal(m.publishNow)
	signal(m.advertiseNow)
	return nil
}

// updateLocal signs, stores and applies the records that differ from
// desired, and returns how many there were. Unless partial, keys missing
// from desired are withdrawn.
func (m *Member) updateLocal(ctx context.Context, desired map[string]proto.Message, partial bool) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	current := m.set.Entries(m.cfg.Cluster)
	signer := registry.Signer{Cluster: m.cfg.Cluster, Key: m.cfg.Credential.Key(), Cert: m.cfg.Credential.Leaf().Raw}
	now := m.cfg.Now().UnixNano()
	var out []registry.Verified
	sign := func(rec *registry.Record) error {
		m.counter++
		rec.Cluster = m.cfg.Cluster
		rec.Version = &registry.Version{Incarnation: m.incarnation, Counter: m.counter}
		rec.SignedAt = now
		sr, err := signer.Sign(rec)
		if err != nil {
			return err
		}
		out = append(out, registry.Verified{Record: rec, Signed: sr})
		return nil
	}
	keys := make([]string, 0, len(desired))
	for k := range desired {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want := desired[k]
		cur := current[k]
		if cur != nil && !cur.Deleted && cur.Version.GetIncarnation() == m.incarnation &&
			(k == registry.InfoKey && proto.Equal(cur.Info, want) || k != registry.InfoKey && proto.Equal(cur.Service, want)) {
			continue
		}
		rec := &registry.Record{Key: k}
		if k == registry.InfoKey {
			rec.Body = &registrypb.Record_Info{Info: want.(*registry.ClusterInfo)}
		} else {
			// A copy: the caller may change its services in place later.
			rec.Body = &registrypb.Record_Service{Service: proto.Clone(want).(*registry.Service)}
		}
		if err := sign(rec); err != nil {
			return 0, err
		}
	}
	for k, cur := range current {
		if _, ok := desired[k]; !ok && !cur.Deleted && !partial {
			if err := sign(&registry.Record{Key: k, Deleted: true}); err != nil {
				return 0, err
			}
		}
	}
	if len(out) == 0 {
		return 0, nil
	}
	if err := m.cfg.Store.Write(ctx, store.RecordOps(m.set, out)...); err != nil {
		return 0, err
	}
	m.set.Apply(out)
	m.notifyLocked()
	m.log.Debug("slice updated", "records", len(out), "version", fmt.Sprintf("%d.%d", m.incarnation, m.counter))
	return len(out), nil
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (m *Member) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Changed returns a channel that is closed at the next change of the view.
func (m *Member) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// advertiseLoop gossips our digest after every change. Gossip.SetLocal
// blocks until memberlist has spread the update (up to a second), so it
// never runs on the caller of Update.
func (m *Member) advertiseLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.advertiseNow:
		}
		m.gossip.SetLocal(m.digest())
	}
}

// publishLoop sends own records the hub has not confirmed.
func (m *Member) publishLoop(ctx context.Context) error {
	backoff := newBackoff()
	for {
		if err := m.publish(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.log.Warn("publish to hub failed; retrying", "hub", m.cfg.Hub, "err", err)
			m.mu.Lock()
			m.acked = nil // resend everything once the hub is back
			m.mu.Unlock()
			if !backoff.wait(ctx) {
				return nil
			}
			continue
		}
		backoff.reset()
		select {
		case <-ctx.Done():
			return nil
		case <-m.publishNow:
		}
	}
}

func (m *Member) publish(ctx context.Context) error {
	m.mu.Lock()
	acked := m.acked
	m.mu.Unlock()
	own := m.set.SliceSince(m.cfg.Cluster, acked)
	if len(own) == 0 {
		return nil
	}
	conn, err := m.conn(m.cfg.Hub, membership.HubID(m.td))
	if err != nil {
		return err
	}
	client := hubpb.NewHubClient(conn)
	var last *registry.Version
	err = membership.SendBatches(own, func(b []*registrypb.SignedRecord, _ bool) error {
		cctx, cancel := context.WithTimeout(ctx, membership.CallTimeout)
		defer cancel()
		resp, err := client.Publish(cctx, &hubpb.PublishRequest{Records: b})
		if err != nil {
			return err
		}
		last = resp.GetVersion()
		return nil
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.acked = last
	m.mu.Unlock()
	return nil
}

// subscribeLoop keeps a stream from the hub open, resuming from our
// versions after every reconnect.
func (m *Member) subscribeLoop(ctx context.Context) error {
	backoff := newBackoff()
	for {
		err := m.subscribe(ctx, backoff)
		m.mu.Lock()
		m.hubSynced = false
		m.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		m.log.Warn("hub stream ended; reconnecting", "hub", m.cfg.Hub, "err", err)
		if !backoff.wait(ctx) {
			return nil
		}
	}
}

func (m *Member) subscribe(ctx context.Context, backoff *backoff) error {
	conn, err := m.conn(m.cfg.Hub, membership.HubID(m.td))
	if err != nil {
		return err
	}
	known := m.set.Versions()
	delete(known, m.cfg.Cluster)
	// Wait for the hub instead of failing fast: the stream resumes as soon
	// as a restarted hub accepts connections, not after our retry backoff.
	waiting := time.AfterFunc(membership.CallTimeout, func() {
		m.log.Warn("hub not reachable; still trying", "hub", m.cfg.Hub, "state", conn.GetState().String())
	})
	stream, err := hubpb.NewHubClient(conn).Subscribe(ctx, &hubpb.SubscribeRequest{Known: &hubpb.VersionVector{Versions: known}}, grpc.WaitForReady(true))
	waiting.Stop()
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		m.applyRemovals(ctx, resp.GetRemovals())
		m.applyExternal(resp.GetExternalBundles())
		m.receive(ctx, resp.GetRecords(), "hub")
		if resp.GetSynced() {
			backoff.reset()
			m.mu.Lock()
			m.hubSynced = true
			// The hub says what it holds of our slice: a hub restored from
			// an older file gets everything newer.
			m.acked = resp.GetYourVersion()
			m.mu.Unlock()
			signal(m.publishNow)
			m.gossip.RejoinNow() // the hub may have restarted as a new gossip node
		}
	}
}

// receive verifies, persists and applies records of other clusters.
func (m *Member) receive(ctx context.Context, signed []*registrypb.SignedRecord, from string) {
	var recs []registry.Verified
	for _, sr := range signed {
		rec, err := m.verifier.Verify(sr)
		if err != nil {
			m.log.Warn("dropped a record that does not verify", "from", from, "err", err)
			continue
		}
		if rec.GetCluster() == m.cfg.Cluster {
			continue // we are the authority on our own slice
		}
		recs = append(recs, registry.Verified{Record: rec, Signed: sr})
	}
	if len(recs) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	fresh := m.set.Newer(recs)
	fresh = m.acceptBundles(fresh, from)
	if len(fresh) == 0 {
		return
	}
	if err := m.cfg.Store.Write(ctx, store.RecordOps(m.set, fresh)...); err != nil {
		m.log.Error("persist remote records", "err", err)
		return
	}
	// Bundles first: whoever sees the new record version also sees its bundle.
	registry.ApplyBundles(m.bundles, fresh, m.log)
	applied := m.set.Apply(fresh)
	m.notifyLocked()
	if m.cfg.OnApply != nil {
		out := make([]*registry.Record, len(applied))
		for i, v := range applied {
			out[i] = v.Record
		}
		m.cfg.OnApply(out)
	}
}

// onDigest runs on the gossip goroutine: schedule a peer fetch if the digest
// is newer than what we hold.
func (m *Member) onDigest(d gossip.Digest) {
	if d.Cluster == "" || d.Cluster == m.cfg.Cluster || d.Incarnation == 0 {
		return
	}
	if registry.Compare(d.Version(), m.set.Version(d.Cluster)) <= 0 {
		return
	}
	m.mu.Lock()
	if _, ok := m.due[d.Cluster]; !ok {
		delay := peerFetchDelay
		if !m.hubSynced {
			delay = 0
		}
		m.due[d.Cluster] = m.cfg.Now().Add(delay)
	}
	m.mu.Unlock()
	signal(m.fetchNow)
}

// fetchLoop fetches versions heard of by gossip that the hub did not bring.
func (m *Member) fetchLoop(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-m.fetchNow:
		}
		now := m.cfg.Now()
		m.mu.Lock()
		var ready []string
		for c, at := range m.due {
			if !now.Before(at) {
				ready = append(ready, c)
				delete(m.due, c)
			}
		}
		m.mu.Unlock()
		for _, c := range ready {
			if err := m.fetchFromPeers(ctx, c); err != nil {
				m.log.Warn("peer fetch failed; will retry on next digest", "cluster", c, "err", err)
			}
		}
	}
}

// fetchFromPeers asks the owner first, then any other member.
func (m *Member) fetchFromPeers(ctx context.Context, cluster string) error {
	var want *registry.Version
	var sources []gossip.MemberState
	for _, ms := range m.gossip.Members() {
		if ms.Cluster == cluster {
			want = ms.Version()
			sources = append([]gossip.MemberState{ms}, sources...)
		} else if ms.API != "" && ms.Cluster != m.cfg.Cluster {
			sources = append(sources, ms)
		}
	}
	if registry.Compare(want, m.set.Version(cluster)) <= 0 {
		return nil
	}
	known := m.set.Versions()
	var lastErr error = errNoSource
	for _, src := range sources {
		if src.API == "" {
			continue
		}
		id := membership.HubID(m.td)
		if src.Cluster != "" {
			id = membership.ClusterID(m.td, src.Cluster)
		}
		conn, err := m.conn(src.API, id)
		if err != nil {
			lastErr = err
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, membership.CallTimeout)
		resp, err := hubpb.NewRegistryClient(conn).Fetch(cctx, &hubpb.FetchRequest{Known: &hubpb.VersionVector{Versions: known}})
		cancel()
		if err != nil {
			lastErr = fmt.Errorf("%s: %w", src.Name, err)
			continue
		}
		m.receive(ctx, resp.GetRecords(), src.Name)
		if registry.Compare(m.set.Version(cluster), want) >= 0 {
			m.log.Info("caught up from a peer", "cluster", cluster, "peer", src.Name, "version", registry.FormatVersion(want))
			return nil
		}
	}
	return lastErr
}

// maintainLoop tracks liveness, expires slices and renews the credential.
func (m *Member) maintainLoop(ctx context.Context) error {
	interval := min(time.Second, m.live.Timers().StaleAfter/4)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	states := make(map[string]string)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		now := m.cfg.Now()
		m.live.Observe(m.gossip.Members(), now)
		changed := false
		for _, c := range m.set.Clusters() {
			if c == m.cfg.Cluster {
				continue
			}
			if m.live.Expired(c, now) {
				m.expire(ctx, c)
				changed = true
				continue
			}
			st, _ := m.live.State(c, now)
			if states[c] != st {
				if states[c] != "" {
					m.log.Info("cluster state changed", "peer", c, "from", states[c], "to", st)
				}
				changed = changed || gossip.Unhealthy(st) != gossip.Unhealthy(states[c])
				states[c] = st
			}
		}
		if changed {
			m.mu.Lock()
			m.notifyLocked()
			m.mu.Unlock()
		}
		m.renewIfDue(ctx, now)
		m.advanceRotation(ctx)
	}
}

func (m *Member) expire(ctx context.Context, cluster string) {
	if m.dropCluster(ctx, cluster) {
		m.log.Warn("cluster expired: its slice and bundle are removed", "peer", cluster)
	}
}

// dropCluster forgets a cluster's slice and bundle, on disk and in memory.
func (m *Member) dropCluster(ctx context.Context, cluster string, extra ...store.Op) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	ops := append([]store.Op{{Bucket: store.BucketRecords, Key: cluster + "\x00", Prefix: true}}, extra...)
	if err := m.cfg.Store.Write(ctx, ops...); err != nil {
		m.log.Error("drop cluster", "peer", cluster, "err", err)
		return false
	}
	if e := m.set.Entries(cluster)[registry.InfoKey]; e != nil && e.Info != nil {
		if td, err := spiffeid.TrustDomainFromString(e.Info.GetTrustDomain()); err == nil {
			m.bundles.Remove(td)
		}
	}
	removed := m.set.Remove(cluster)
	m.live.Forget(cluster)
	m.notifyLocked()
	return removed
}

// renewIfDue renews the cluster credential after half its lifetime.
func (m *Member) renewIfDue(ctx context.Context, now time.Time) {
	leaf := m.cfg.Credential.Leaf()
	if now.Before(trust.RenewAt(leaf)) {
		return
	}
	key, err := trust.GenerateKey()
	if err != nil {
		return
	}
	csr, err := trust.NewCSR(key)
	if err != nil {
		return
	}
	conn, err := m.conn(m.cfg.Hub, membership.HubID(m.td))
	if err != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, membership.CallTimeout)
	defer cancel()
	resp, err := hubpb.NewHubClient(conn).Renew(cctx, &hubpb.RenewRequest{Csr: csr})
	if err != nil {
		m.log.Warn("credential renewal failed; retrying", "expires", leaf.NotAfter, "err", err)
		return
	}
	certs, err := trust.ParseCertificates(resp.GetCertificates())
	if err != nil {
		m.log.Error("renewed credential is malformed", "err", err)
		return
	}
	if err := m.cfg.Credential.Set(certs, key); err != nil {
		m.log.Error("renewed credential", "err", err)
		return
	}
	if m.cfg.CredentialPath != "" {
		if err := m.cfg.Credential.Save(m.cfg.CredentialPath); err != nil {
			m.log.Error("save renewed credential", "path", m.cfg.CredentialPath, "err", err)
		}
	}
	m.log.Info("cluster credential renewed", "expires", certs[0].NotAfter)
}

// conn returns a cached mTLS connection to addr that accepts only id.
func (m *Member) conn(addr string, id spiffeid.ID) (*grpc.ClientConn, error) {
	key := addr + "|" + id.String()
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.conns[key]; ok {
		return c, nil
	}
	tlsConf := trust.ClientTLS(m.cfg.Credential, trust.Bundle(m.td, m.cfg.CA...), tlsconfig.AuthorizeID(id))
	if cluster := membership.ClusterOf(m.td, id); cluster != "" {
		// A peer behind its gateway is reached by this name; a peer
		// reached directly ignores it.
		tlsConf.ServerName = sni.Internal(sni.ControlPlane, cluster)
	}
	c, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(membership.MaxMessageBytes), grpc.MaxCallSendMsgSize(membership.MaxMessageBytes)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxConnectBackoff},
			MinConnectTimeout: membership.CallTimeout,
		}),
		membership.ClientKeepalive(),
	)
	if err != nil {
		return nil, fmt.Errorf("member: dial %s: %w", addr, err)
	}
	m.conns[key] = c
	return c, nil
}

// Fetch serves our records to peers.
func (m *Member) Fetch(ctx context.Context, req *hubpb.FetchRequest) (*hubpb.FetchResponse, error) {
	if _, err := membership.Identify(ctx, m.td, m.verifier); err != nil {
		return nil, err
	}
	return &hubpb.FetchResponse{Records: m.set.Since(req.GetKnown().GetVersions())}, nil
}

// Status reports every cluster as this member sees it.
func (m *Member) Status(ctx context.Context, _ *hubpb.StatusRequest) (*hubpb.StatusResponse, error) {
	if _, err := membership.Identify(ctx, m.td, m.verifier); err != nil {
		return nil, err
	}
	return m.StatusNow(), nil
}

// StatusNow is Status without the call.
func (m *Member) StatusNow() *hubpb.StatusResponse {
	st := gossip.BuildStatus(m.cfg.Mesh, m.cfg.Cluster, m.set, m.live, m.gossip.Members(), m.cfg.Now())
	if m.cfg.PolicyWarnings != nil {
		st.PolicyWarnings = m.cfg.PolicyWarnings()
	}
	return st
}

// Services returns a cluster's services as this member would route to
// them: endpoints of a stale or dead cluster are marked unhealthy.
func (m *Member) Services(cluster string) []*registry.Service {
	svcs := m.set.Services(cluster)
	if cluster == m.cfg.Cluster {
		return svcs
	}
	if st, _ := m.live.State(cluster, m.cfg.Now()); !gossip.Unhealthy(st) {
		return svcs
	}
	out := make([]*registry.Service, len(svcs))
	for i, s := range svcs {
		c := proto.Clone(s).(*registry.Service)
		for _, ep := range c.Endpoints {
			ep.Health = registrypb.Health_UNHEALTHY
		}
		out[i] = c
	}
	return out
}

// Clusters returns the names of every cluster with a slice.
func (m *Member) Clusters() []string { return m.set.Clusters() }

// Version returns the newest version held for a cluster.
func (m *Member) Version(cluster string) *registry.Version { return m.set.Version(cluster) }

// backoff is a jittered exponential retry delay.
type backoff struct{ next time.Duration }

func newBackoff() *backoff { return &backoff{next: 100 * time.Millisecond} }

func (b *backoff) reset() { b.next = 100 * time.Millisecond }

// wait sleeps for the next delay; false if ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	d := b.next/2 + rand.N(b.next/2+1)
	b.next = min(b.next*2, maxBackoff)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Cluster returns this member's cluster name.
func (m *Member) Cluster() string { return m.cfg.Cluster }

// Mesh returns the federation's name.
func (m *Member) Mesh() string { return m.cfg.Mesh }

// MeshCA returns the hub CA certificates every member credential chains to.
func (m *Member) MeshCA() []*x509.Certificate { return m.cfg.CA }

// Summaries describes every slice held, sorted by cluster.
func (m *Member) Summaries() []registry.Summary { return m.set.Summaries() }

// ClusterDown reports whether a cluster is stale or dead by gossip, so
// that its endpoints get no traffic.
func (m *Member) ClusterDown(cluster string) bool {
	st, _ := m.live.State(cluster, m.cfg.Now())
	return gossip.Unhealthy(st)
}

// Touch wakes everything waiting on Changed without changing the view:
// for a change of policy that the view's watchers also follow.
func (m *Member) Touch() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.notifyLocked()
}
