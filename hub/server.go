package hub

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/probe"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Defaults for the hub.
const (
	DefaultCredentialTTL = 24 * time.Hour
	hubCredentialTTL     = 30 * 24 * time.Hour
	subscriberBuffer     = 1024
	// MaxTokenTTL is the longest lifetime of a join token.
	MaxTokenTTL = 7 * 24 * time.Hour
)

// Files the hub writes into its data directory.
const (
	StoreFile     = "hub.db"
	AdminCredFile = "admin.pem"
	metaCA        = "ca"
)

// Config configures a hub.
type Config struct {
	// Mesh names the federation; it is also the hub's trust domain.
	Mesh string
	// Listen is the gRPC address; Advertise (default Listen) goes into tokens.
	Listen    string
	Advertise string
	DataDir   string
	// GossipBind is the gossip address; the default is Listen's host, port 0.
	GossipBind string
	// GossipAdvertise is the gossip address members dial; the default is
	// GossipBind, or Advertise's host with GossipBind's port.
	GossipAdvertise string
	GossipProfile   string
	Timers          gossip.Timers
	// CredentialTTL is the lifetime of issued cluster credentials.
	CredentialTTL time.Duration
	// BundleListen, if set, serves every member's SPIFFE bundle at
	// https://<addr>/<trust domain>.
	BundleListen string
	// BundleProfile is the bundle endpoint's profile: https_spiffe (the
	// default; the endpoint presents spiffe://<mesh>/hub) or https_web
	// (it presents BundleCertFile, a web PKI certificate, with its key).
	BundleProfile  string
	BundleCertFile string
	BundleKeyFile  string
	// External trust domains whose bundles the hub imports and relays.
	External []ExternalTrustDomain
	// Store is StoreBolt (the default: DataDir/hub.db, one hub) or
	// StoreEtcd (replicas sharing Etcd).
	Store string
	Etcd  EtcdConfig
	// CAFile, if set, holds the mesh CA (certificate and key, PEM) instead
	// of the store; replicas on etcd each mount the same one.
	CAFile string
	Logger *slog.Logger
	Now    func() time.Time
}

// Server is the federation hub.
type Server struct {
	hubpb.UnimplementedHubServer
	hubpb.UnimplementedRegistryServer

	cfg  Config
	td   spiffeid.TrustDomain
	log  *slog.Logger
	set  *registry.Set
	live *gossip.Liveness

	// Set in Run before serving.
	backend   backend
	ca        *trust.CA
	verifier  *registry.Verifier
	gossip    *gossip.Node
	cred      *trust.Credential // the hub's own, renewed in place
	listener  net.Listener
	split     *splitListener // hands the listener's connections to the two servers
	bundleLis net.Listener
	ready     chan struct{}
	// bundles holds the members' bundles, external the imported ones.
	bundles   *trust.BundleSet
	external  *trust.BundleSet
	importers []*importer
	removed   map[string]time.Time // guarded by pubMu
	stopping  chan struct{}        // closed when Run begins to stop: ends the streams

	// clusterMu orders the changes of each cluster (publish, expiry,
	// removal) from check to store to apply; pubMu guards applying them,
	// and removed.
	clusterMu clusterLocks
	pubMu     sync.Mutex
	follower  follower // the etcd watch, with replicas
	replicaID string   // this replica's key in etcd's list of replicas

	subMu sync.Mutex // guards subs and hubs
	subs  map[*subscriber]struct{}
	hubs  []string // what subscribers learn as the hub's replicas
	// relayEnc encodes each relayed update once for all subscribers.
	relayEnc relayEncoder

	storeHealth storeHealth
	maintained  probe.Heartbeat // beats on every turn of maintain
}

// New validates cfg and returns a hub; it does no I/O.
func New(cfg Config) (*Server, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.Mesh)
	if err != nil {
		return nil, fmt.Errorf("hub: mesh name %q is not a valid trust domain: %w", cfg.Mesh, err)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("hub: a data directory is required")
	}
	if cfg.Listen == "" {
		return nil, errors.New("hub: a listen address is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.validateBundleProfile(); err != nil {
		return nil, err
	}
	if cfg.CredentialTTL == 0 {
		cfg.CredentialTTL = DefaultCredentialTTL
	}
	if err := cfg.validateStore(); err != nil {
		return nil, err
	}
	return &Server{
		cfg:       cfg,
		td:        td,
		log:       cfg.Logger.With("component", "hub"),
		set:       registry.NewSet(false),
		live:      gossip.NewLiveness(cfg.Timers, cfg.Now()),
		subs:      make(map[*subscriber]struct{}),
		ready:     make(chan struct{}),
		stopping:  make(chan struct{}),
		bundles:   trust.NewBundleSet(),
		external:  trust.NewBundleSet(),
		removed:   make(map[string]time.Time),
		replicaID: rand.Text()[:16],
	}, nil
}

// Ready is closed once the hub serves; Addr is valid from then on.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the address the hub listens on.
func (s *Server) Addr() string {
	if !s.started() {
		return ""
	}
	return s.listener.Addr().String()
}

// GossipAddr returns the hub's gossip address.
func (s *Server) GossipAddr() string {
	if !s.started() {
		return ""
	}
	return s.gossip.Addr()
}

// started reports whether Run got as far as Ready: the listeners exist.
func (s *Server) started() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// Run opens the store and serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("hub: data directory: %w", err)
	}
	b, err := s.openBackend(ctx)
	if err != nil {
		return err
	}
	defer b.Close()
	s.backend = b
	if err := s.loadIdentity(ctx); err != nil {
		return err
	}
	// With etcd, the load reads at one revision; what other replicas
	// write after it reaches this one by the watch.
	eb, replicated := b.(*etcdBackend)
	var from int64
	if replicated {
		recs, rev, err := s.loadEtcd(ctx, eb)
		if err != nil {
			return err
		}
		s.set.Apply(recs)
		from = rev
	} else if err := s.loadRecords(ctx); err != nil {
		return err
	}
	if err := s.loadTrustState(ctx); err != nil {
		return err
	}
	cred, err := s.issueOwn(membership.HubID(s.td), hubCredentialTTL)
	if err != nil {
		return err
	}
	s.cred = cred
	if err := s.writeAdmin(); err != nil {
		return err
	}

	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("hub: listen on %s: %w", s.cfg.Listen, err)
	}
	s.listener = lis
	if s.cfg.Advertise == "" {
		s.cfg.Advertise = lis.Addr().String()
	}
	s.setHubs([]string{s.cfg.Advertise}) // the other replicas, if any, follow
	gossipBind := s.cfg.GossipBind
	if gossipBind == "" {
		host, _, _ := net.SplitHostPort(lis.Addr().String())
		gossipBind = net.JoinHostPort(host, "0")
	}
	s.gossip = gossip.New(gossip.Config{
		Bind: gossipBind, Advertise: gossipAdvertise(gossipBind, s.cfg.GossipAdvertise, s.cfg.Advertise),
		Credential: cred, CA: []*x509.Certificate{s.ca.Cert},
		Label: s.cfg.Mesh, Profile: s.cfg.GossipProfile, Logger: s.cfg.Logger,
		Revoked: s.verifier.RevokedCredential,
	}, gossip.Digest{Name: "hub", API: s.cfg.Advertise}, nil)

	s.split = newSplitListener(lis, trust.ServerTLS(cred, trust.Bundle(s.td, s.ca.Cert)), s.log)
	members, admission := s.newServers()

	var bundleConf *tls.Config
	if s.cfg.BundleListen != "" {
		if bundleConf, err = s.bundleTLS(cred); err != nil {
			lis.Close()
			return err
		}
		if s.bundleLis, err = net.Listen("tcp", s.cfg.BundleListen); err != nil {
			lis.Close()
			return fmt.Errorf("hub: bundle endpoint on %s: %w", s.cfg.BundleListen, err)
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.gossip.Run(ctx) })
	g.Go(func() error { return s.split.run(ctx) })
	g.Go(func() error { return serveUntilStopped(members, s.split.members) })
	g.Go(func() error { return serveUntilStopped(admission, s.split.admission) })
	g.Go(func() error {
		<-ctx.Done()
		// Subscribe streams never end on their own: end them, so that the
		// graceful stop does not wait out its grace period and members
		// reconnect at once.
		close(s.stopping)
		membership.GracefulStop(admission)
		membership.GracefulStop(members)
		return nil
	})
	g.Go(func() error { return s.maintain(ctx, cred) })
	if s.bundleLis != nil {
		g.Go(func() error { return serveBundles(ctx, s.bundleLis, bundleConf, s.bundles, s.log) })
	}
	for _, im := range s.importers {
		g.Go(func() error { return im.run(ctx) })
	}
	if replicated {
		g.Go(func() error { return s.follow(ctx, eb, from+1) })
		g.Go(func() error { return eb.watchEndpoints(ctx, s.log) })
	}
	select {
	case <-s.gossip.Ready():
	case <-ctx.Done():
		return g.Wait()
	}
	if replicated {
		g.Go(func() error { return s.announce(ctx, eb) })
		g.Go(func() error { return s.followReplicas(ctx) })
	}
	close(s.ready)
	s.log.Info("hub serving", "addr", s.Addr(), "gossip", s.GossipAddr(), "mesh", s.cfg.Mesh, "clusters", len(s.set.Clusters()))
	return g.Wait() // before the store closes
}

// serveUntilStopped serves lis until srv is stopped, also when the stop
// came first: a hub stopped as soon as it is ready stops cleanly.
func serveUntilStopped(srv *grpc.Server, lis net.Listener) error {
	if err := srv.Serve(lis); !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// newServers returns the gRPC server for members (callers with a mesh
// certificate) and the one for everyone else, which may only Join: its
// limits bound what an unauthenticated caller makes the hub hold.
func (s *Server) newServers() (members, admission *grpc.Server) {
	members = grpc.NewServer(
		grpc.Creds(handshakeDone{}),
		grpc.MaxRecvMsgSize(membership.MaxMessageBytes),
		grpc.MaxSendMsgSize(membership.MaxMessageBytes),
		membership.ServerKeepalive(),
		membership.ServerKeepalivePolicy(),
	)
	admission = grpc.NewServer(
		grpc.Creds(handshakeDone{}),
		grpc.MaxRecvMsgSize(maxUnauthenticatedMessage),
		grpc.MaxHeaderListSize(maxUnauthenticatedHeaders),
		grpc.MaxConcurrentStreams(maxUnauthenticatedStreams),
		// A fixed window of 64 KiB (no dynamic growth) bounds what the
		// transport buffers per connection.
		grpc.InitialWindowSize(unauthenticatedWindow),
		grpc.InitialConnWindowSize(unauthenticatedWindow),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: unauthenticatedIdle, MaxConnectionAge: unauthenticatedAge, MaxConnectionAgeGrace: 10 * time.Second,
			Time: 30 * time.Second, Timeout: 10 * time.Second,
		}),
		membership.ServerKeepalivePolicy(),
	)
	// Both serve every method: without a certificate, all but Join are
	// refused as unauthenticated, as before.
	for _, srv := range []*grpc.Server{members, admission} {
		hubpb.RegisterHubServer(srv, s)
		hubpb.RegisterRegistryServer(srv, s)
	}
	return members, admission
}

// maintain ticks liveness, expires slices and renews the hub's credential.
func (s *Server) maintain(ctx context.Context, cred *trust.Credential) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		s.maintained.Beat()
		now := s.cfg.Now()
		s.live.Observe(s.gossip.Members(), now)
		for _, c := range s.set.Clusters() {
			if s.live.Expired(c, now) {
				s.removeCluster(ctx, c)
			}
		}
		if now.After(trust.RenewAt(cred.Leaf())) {
			fresh, err := s.issueOwn(membership.HubID(s.td), hubCredentialTTL)
			if err != nil {
				s.log.Error("renew hub credential", "err", err)
				continue
			}
			sv, _ := fresh.GetX509SVID()
			_ = cred.Set(sv.Certificates, sv.PrivateKey)
		}
	}
}

func (s *Server) removeCluster(ctx context.Context, cluster string) {
	defer s.clusterMu.mustLock(cluster)()
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if err := s.write(ctx, store.Op{Bucket: store.BucketRecords, Key: cluster + "\x00", Prefix: true}); err != nil {
		s.log.Error("expire cluster", "cluster", cluster, "err", err)
		return
	}
	s.set.Remove(cluster)
	s.live.Forget(cluster)
	s.log.Warn("cluster expired: its slice is removed", "cluster", cluster, "after", s.live.Timers().ExpireAfter)
}

func (s *Server) loadIdentity(ctx context.Context) error {
	if s.cfg.CAFile != "" {
		ca, err := loadCAFile(s.td, s.cfg.CAFile)
		if err != nil {
			return err
		}
		s.ca = ca
		s.verifier = registry.NewVerifier(s.cfg.Mesh, []*x509.Certificate{s.ca.Cert})
		return nil
	}
	data, err := s.backend.Get(ctx, store.BucketMeta, metaCA)
	if err != nil {
		return err
	}
	if data == nil {
		if err := s.checkNoEarlierCA(); err != nil {
			return err
		}
		ca, err := trust.NewCA(s.td, s.cfg.Now())
		if err != nil {
			return err
		}
		if data, err = ca.MarshalPEM(); err != nil {
			return err
		}
		if err := s.backend.Write(ctx, store.Op{Bucket: store.BucketMeta, Key: metaCA, Value: data}); err != nil {
			return err
		}
		s.log.Info("created hub CA", "fingerprint", trust.Fingerprint(ca.Cert))
	}
	if s.ca, err = trust.ParseCA(s.td, data); err != nil {
		return fmt.Errorf("hub: CA in %s: %w", s.backend.Where(), err)
	}
	// With another --mesh than the stored CA's, the hub would serve a
	// trust domain no member and no admin credential can verify.
	if other := otherMesh(s.ca, s.td); other != "" {
		return fmt.Errorf("hub: %s holds the CA of %s, not of mesh %q: start the hub with the --mesh it was created for, or give a new --data-dir for a new mesh",
			s.backend.Where(), other, s.td.Name())
	}
	s.verifier = registry.NewVerifier(s.cfg.Mesh, []*x509.Certificate{s.ca.Cert})
	return nil
}

// checkNoEarlierCA refuses to create the mesh CA in a data directory
// whose ca.pem shows that this hub created one before: its store was
// lost, emptied or replaced, and a new CA would cut off every cluster
// that joined.
func (s *Server) checkNoEarlierCA() error {
	caPath := filepath.Join(s.cfg.DataDir, membership.CAFile)
	if _, err := os.Stat(caPath); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	certs, err := trust.LoadCertificates(caPath)
	if err != nil {
		return nil // not a certificate this hub wrote
	}
	return fmt.Errorf("hub: %s holds no mesh CA, but %s shows that this hub created one (%s): the store was lost or replaced, "+
		"and a new CA would cut off every cluster that joined. Stop the hub and restore %s from a backup; "+
		"or, to start a new mesh that every cluster must join again, move %s and %s aside",
		s.backend.Where(), caPath, trust.Fingerprint(certs[0]), filepath.Join(s.cfg.DataDir, StoreFile), caPath, filepath.Join(s.cfg.DataDir, AdminCredFile))
}

func (s *Server) loadRecords(ctx context.Context) error {
	recs, err := loadRecords(ctx, s.backend)
	if err != nil {
		return err
	}
	s.set.Apply(recs)
	return nil
}

// gossipAdvertise picks the hub's advertised gossip address: the one
// given, else the bind address if it names an IP, else the API's
// advertised host with the bind port.
func gossipAdvertise(bind, advertise, api string) string {
	if advertise != "" {
		return advertise
	}
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		return bind
	}
	if apiHost, _, err := net.SplitHostPort(api); err == nil {
		if ip := net.ParseIP(apiHost); ip != nil && !ip.IsUnspecified() {
			return net.JoinHostPort(apiHost, port)
		}
	}
	return ""
}
