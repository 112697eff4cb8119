package hub

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Defaults for the hub.
const (
	DefaultCredentialTTL = 24 * time.Hour
	hubCredentialTTL     = 30 * 24 * time.Hour
	subscriberBuffer     = 1024
	maxTokenTTL          = 7 * 24 * time.Hour
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
	// BundleListen, if set, serves every member's SPIFFE bundle over
	// https_spiffe at https://<addr>/<trust domain>.
	BundleListen string
	// External trust domains whose bundles the hub imports and relays.
	External []ExternalTrustDomain
	Logger   *slog.Logger
	Now      func() time.Time
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
	store     *store.Store
	ca        *trust.CA
	verifier  *registry.Verifier
	gossip    *gossip.Node
	cred      *trust.Credential // the hub's own, renewed in place
	listener  net.Listener
	bundleLis net.Listener
	ready     chan struct{}
	// bundles holds the members' bundles, external the imported ones.
	bundles   *trust.BundleSet
	external  *trust.BundleSet
	importers []*importer
	removed   map[string]time.Time // guarded by pubMu
	stopping  chan struct{}        // closed when Run begins to stop: ends the streams

	pubMu   sync.Mutex // serializes verify-persist-apply of published records
	tokenMu sync.Mutex // serializes token use

	subMu sync.Mutex // guards subs
	subs  map[*subscriber]struct{}
}

type subscriber struct {
	cluster string
	ch      chan *hubpb.SubscribeResponse
	slow    chan struct{} // closed when ch overflowed
	once    sync.Once
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
	if cfg.CredentialTTL == 0 {
		cfg.CredentialTTL = DefaultCredentialTTL
	}
	return &Server{
		cfg:      cfg,
		td:       td,
		log:      cfg.Logger.With("component", "hub"),
		set:      registry.NewSet(false),
		live:     gossip.NewLiveness(cfg.Timers, cfg.Now()),
		subs:     make(map[*subscriber]struct{}),
		ready:    make(chan struct{}),
		stopping: make(chan struct{}),
		bundles:  trust.NewBundleSet(),
		external: trust.NewBundleSet(),
		removed:  make(map[string]time.Time),
	}, nil
}

// Ready is closed once the hub serves; Addr is valid from then on.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the address the hub listens on.
func (s *Server) Addr() string { return s.listener.Addr().String() }

// GossipAddr returns the hub's gossip address.
func (s *Server) GossipAddr() string { return s.gossip.Addr() }

// Run opens the store and serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("hub: data directory: %w", err)
	}
	store, err := store.Open(filepath.Join(s.cfg.DataDir, StoreFile))
	if err != nil {
		return err
	}
	defer store.Close()
	s.store = store
	if err := s.loadIdentity(ctx); err != nil {
		return err
	}
	if err := s.loadRecords(); err != nil {
		return err
	}
	if err := s.loadTrustState(); err != nil {
		return err
	}
	cred, err := s.issueOwn(membership.HubID(s.td), hubCredentialTTL)
	s.cred = cred
	if err != nil {
		return err
	}
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
	gossipBind := s.cfg.GossipBind
	if gossipBind == "" {
		host, _, _ := net.SplitHostPort(lis.Addr().String())
		gossipBind = net.JoinHostPort(host, "0")
	}
	s.gossip = gossip.New(gossip.Config{
		Bind: gossipBind, Advertise: gossipAdvertise(gossipBind, s.cfg.GossipAdvertise, s.cfg.Advertise),
		Credential: cred, CA: []*x509.Certificate{s.ca.Cert},
		Label: s.cfg.Mesh, Profile: s.cfg.GossipProfile, Logger: s.cfg.Logger,
	}, gossip.Digest{Name: "hub", API: s.cfg.Advertise}, nil)

	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(trust.ServerTLS(cred, trust.Bundle(s.td, s.ca.Cert)))),
		grpc.MaxRecvMsgSize(membership.MaxMessageBytes),
		grpc.MaxSendMsgSize(membership.MaxMessageBytes),
		membership.ServerKeepalive(),
		membership.ServerKeepalivePolicy(),
	)
	hubpb.RegisterHubServer(srv, s)
	hubpb.RegisterRegistryServer(srv, s)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4+len(s.importers))
	var wg sync.WaitGroup
	defer wg.Wait() // before the store closes
	wg.Go(func() { errc <- s.gossip.Run(ctx) })
	wg.Go(func() { errc <- srv.Serve(lis) })
	wg.Go(func() { errc <- s.maintain(ctx, cred) })
	if s.cfg.BundleListen != "" {
		if s.bundleLis, err = net.Listen("tcp", s.cfg.BundleListen); err != nil {
			cancel()
			srv.Stop()
			return fmt.Errorf("hub: bundle endpoint on %s: %w", s.cfg.BundleListen, err)
		}
		wg.Go(func() { errc <- serveBundles(ctx, s.bundleLis, cred, s.bundles, s.log) })
	}
	for _, im := range s.importers {
		wg.Go(func() { errc <- im.run(ctx) })
	}
	select {
	case <-s.gossip.Ready():
	case err := <-errc:
		cancel()
		srv.Stop()
		return err
	}
	close(s.ready)
	s.log.Info("hub serving", "addr", s.Addr(), "gossip", s.GossipAddr(), "mesh", s.cfg.Mesh, "clusters", len(s.set.Clusters()))

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	cancel()
	// Subscribe streams never end on their own: end them, so that the
	// graceful stop does not wait out its grace period and members
	// reconnect at once.
	close(s.stopping)
	membership.GracefulStop(srv)
	return runErr
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
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if err := s.store.Write(ctx, store.Op{Bucket: store.BucketRecords, Key: cluster + "\x00", Prefix: true}); err != nil {
		s.log.Error("expire cluster", "cluster", cluster, "err", err)
		return
	}
	s.set.Remove(cluster)
	s.live.Forget(cluster)
	s.log.Warn("cluster expired: its slice is removed", "cluster", cluster, "after", s.live.Timers().ExpireAfter)
}

func (s *Server) loadIdentity(ctx context.Context) error {
	data, err := s.store.Get(store.BucketMeta, metaCA)
	if err != nil {
		return err
	}
	if data == nil {
		ca, err := trust.NewCA(s.td, s.cfg.Now())
		if err != nil {
			return err
		}
		if data, err = ca.MarshalPEM(); err != nil {
			return err
		}
		if err := s.store.Write(ctx, store.Op{Bucket: store.BucketMeta, Key: metaCA, Value: data}); err != nil {
			return err
		}
		s.log.Info("created hub CA", "fingerprint", trust.Fingerprint(ca.Cert))
	}
	if s.ca, err = trust.ParseCA(s.td, data); err != nil {
		return fmt.Errorf("hub: CA in %s: %w", s.store.Path(), err)
	}
	s.verifier = registry.NewVerifier(s.cfg.Mesh, []*x509.Certificate{s.ca.Cert})
	return nil
}

func (s *Server) loadRecords() error {
	var recs []registry.Verified
	signers := make(registry.SignerCache)
	err := s.store.ForEach(store.BucketRecords, func(key string, value []byte) error {
		sr := new(registrypb.SignedRecord)
		rec := new(registrypb.Record)
		if err := proto.Unmarshal(value, sr); err != nil {
			return fmt.Errorf("record %q: %w", key, err)
		}
		if err := proto.Unmarshal(sr.GetRecord(), rec); err != nil {
			return fmt.Errorf("record %q: %w", key, err)
		}
		signers.Intern(sr)
		recs = append(recs, registry.Verified{Record: rec, Signed: sr})
		return nil
	})
	if err != nil {
		return fmt.Errorf("hub: load %s: %w", s.store.Path(), err)
	}
	s.set.Apply(recs)
	return nil
}

// issueOwn issues a credential from the hub CA with a fresh key; the chain
// includes the CA so that joining clusters can pin it.
func (s *Server) issueOwn(id spiffeid.ID, ttl time.Duration) (*trust.Credential, error) {
	key, err := trust.GenerateKey()
	if err != nil {
		return nil, err
	}
	leaf, err := s.ca.Issue(id, key.Public(), ttl, s.cfg.Now())
	if err != nil {
		return nil, err
	}
	return trust.NewCredential([]*x509.Certificate{leaf, s.ca.Cert}, key)
}

// writeAdmin writes the CA and an admin credential for the CLI.
func (s *Server) writeAdmin() error {
	if err := trust.WriteFileAtomic(filepath.Join(s.cfg.DataDir, membership.CAFile), trust.EncodeCertificates(s.ca.Cert), 0o644); err != nil {
		return err
	}
	path := filepath.Join(s.cfg.DataDir, AdminCredFile)
	if c, err := trust.LoadCredential(path); err == nil && s.cfg.Now().Add(30*24*time.Hour).Before(c.Expiry()) && c.Leaf().CheckSignatureFrom(s.ca.Cert) == nil {
		return nil
	}
	admin, err := s.issueOwn(membership.AdminID(s.td), 365*24*time.Hour)
	if err != nil {
		return err
	}
	return admin.Save(path)
}

// Join trades a one-time token for a cluster credential.
func (s *Server) Join(ctx context.Context, req *hubpb.JoinRequest) (*hubpb.JoinResponse, error) {
	tok, err := membership.ParseToken(req.GetToken())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	data, err := s.store.Get(store.BucketTokens, tok.ID)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read token: %v", err)
	}
	var rec tokenRecord
	if data == nil || json.Unmarshal(data, &rec) != nil {
		s.log.Warn("join refused: unknown token", "cluster", tok.Cluster)
		return nil, status.Error(codes.PermissionDenied, membership.ErrTokenUnknown.Error())
	}
	now := s.cfg.Now()
	if err := rec.check(tok, now); err != nil {
		s.log.Warn("join refused", "cluster", tok.Cluster, "err", err)
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	id := membership.ClusterID(s.td, rec.Cluster)
	td := rec.TrustDomain
	if td == "" {
		td = registry.DefaultTrustDomain(rec.Cluster, s.cfg.Mesh)
	}
	// The credential names the one trust domain the cluster may speak for.
	cert, err := s.ca.IssueCSR(req.GetCsr(), id, s.cfg.CredentialTTL, now, td)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	rec.UsedAt = now
	data, _ = json.Marshal(rec)
	if err := s.store.Write(ctx, store.Op{Bucket: store.BucketTokens, Key: tok.ID, Value: data}); err != nil {
		return nil, status.Errorf(codes.Unavailable, "record token use: %v", err)
	}
	s.log.Info("cluster joined", "cluster", rec.Cluster, "id", id)
	return &hubpb.JoinResponse{
		Mesh:         s.cfg.Mesh,
		Cluster:      rec.Cluster,
		Certificates: [][]byte{cert.Raw, s.ca.Cert.Raw},
		Ca:           s.ca.Cert.Raw,
		GossipSeeds:  s.gossipSeeds(),
	}, nil
}

func (s *Server) gossipSeeds() []string {
	seeds := []string{s.gossip.Addr()}
	for _, m := range s.gossip.Members() {
		if m.Cluster != "" && len(seeds) < 8 {
			// The node name selects the cluster behind a gateway.
			seeds = append(seeds, m.Name+"/"+m.Addr)
		}
	}
	return seeds
}

// Renew issues a fresh credential to a cluster holding a valid one.
func (s *Server) Renew(ctx context.Context, req *hubpb.RenewRequest) (*hubpb.RenewResponse, error) {
	c, err := s.identify(ctx)
	if err != nil {
		return nil, err
	}
	if c.Cluster == "" {
		return nil, status.Error(codes.PermissionDenied, "only cluster credentials are renewed")
	}
	current, err := trust.PeerCertificate(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	cert, err := s.ca.IssueCSR(req.GetCsr(), c.ID, s.cfg.CredentialTTL, s.cfg.Now(), current.DNSNames...)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &hubpb.RenewResponse{Certificates: [][]byte{cert.Raw, s.ca.Cert.Raw}}, nil
}

// CreateToken mints a join token for one cluster.
func (s *Server) CreateToken(ctx context.Context, req *hubpb.CreateTokenRequest) (*hubpb.CreateTokenResponse, error) {
	c, err := s.identify(ctx)
	if err != nil {
		return nil, err
	}
	if !c.Admin {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not create tokens; use the hub's %s", c.ID, AdminCredFile)
	}
	if err := registry.ValidClusterName(req.GetCluster()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl <= 0 {
		ttl = membership.DefaultTokenTTL
	}
	if ttl > maxTokenTTL {
		return nil, status.Errorf(codes.InvalidArgument, "token ttl %s exceeds the limit of %s", ttl, maxTokenTTL)
	}
	tok, err := membership.NewToken(req.GetCluster(), s.cfg.Advertise, trust.Fingerprint(s.ca.Cert), s.cfg.Now().Add(ttl))
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if td := req.GetTrustDomain(); td != "" {
		if _, err := spiffeid.TrustDomainFromString(td); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "trust domain %q: %v", td, err)
		}
	}
	data, _ := json.Marshal(tokenRecord{Cluster: tok.Cluster, TrustDomain: req.GetTrustDomain(), Expires: tok.Expires, SecretHash: hashSecret(tok.Secret)})
	if err := s.store.Write(ctx, store.Op{Bucket: store.BucketTokens, Key: tok.ID, Value: data}); err != nil {
		return nil, status.Errorf(codes.Unavailable, "store token: %v", err)
	}
	s.log.Info("join token created", "cluster", tok.Cluster, "expires", tok.Expires)
	return &hubpb.CreateTokenResponse{Token: tok.String(), ExpiresAt: tok.Expires.Unix()}, nil
}

// Publish stores and relays records of the caller's own cluster.
func (s *Server) Publish(ctx context.Context, req *hubpb.PublishRequest) (*hubpb.PublishResponse, error) {
	c, err := s.identify(ctx)
	if err != nil {
		return nil, err
	}
	if c.Cluster == "" {
		return nil, status.Error(codes.PermissionDenied, "only clusters publish slices")
	}
	recs, err := s.verifier.VerifyAll(req.GetRecords())
	if err != nil {
		s.log.Warn("publish refused", "cluster", c.Cluster, "err", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	for _, r := range recs {
		if r.Record.GetCluster() != c.Cluster {
			s.log.Warn("publish refused: record of another cluster", "caller", c.Cluster, "record_cluster", r.Record.GetCluster(), "key", r.Record.GetKey())
			return nil, status.Errorf(codes.PermissionDenied, "cluster %q may publish only its own slice; the request carries a record of %q, so nothing was stored", c.Cluster, r.Record.GetCluster())
		}
	}
	changed, err := s.commit(ctx, recs)
	var refused *refusedError
	if errors.As(err, &refused) {
		s.log.Warn("publish refused", "cluster", c.Cluster, "err", refused.err)
		return nil, status.Errorf(codes.InvalidArgument, "%v; nothing was stored", refused.err)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "store records: %v", err)
	}
	s.fanout(c.Cluster, changed)
	return &hubpb.PublishResponse{Version: s.set.Version(c.Cluster)}, nil
}

// refusedError is a publish refused for its content, not for a failure.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }

// commit persists the records that are newer than what the hub holds, then
// applies them. Nothing is applied that is not on disk.
func (s *Server) commit(ctx context.Context, recs []registry.Verified) ([]*registrypb.SignedRecord, error) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	fresh := s.set.Newer(recs)
	if len(fresh) == 0 {
		return nil, nil
	}
	if err := registry.CheckBundles(s.bundles, fresh); err != nil {
		return nil, &refusedError{err}
	}
	if err := s.store.Write(ctx, store.RecordOps(s.set, fresh)...); err != nil {
		return nil, err
	}
	applied := s.set.Apply(fresh)
	registry.ApplyBundles(s.bundles, applied, s.log)
	out := make([]*registrypb.SignedRecord, len(applied))
	for i, v := range applied {
		out[i] = v.Signed
	}
	return out, nil
}

// fanout relays one cluster's records to every other subscriber: a member
// drops its own records, after paying to verify them.
func (s *Server) fanout(cluster string, recs []*registrypb.SignedRecord) {
	if len(recs) == 0 {
		return
	}
	s.broadcast(&hubpb.SubscribeResponse{Records: recs}, cluster)
}

// broadcast queues an update for every subscriber but the one of cluster
// skip; a subscriber whose queue is full is cut off and resumes later.
func (s *Server) broadcast(u *hubpb.SubscribeResponse, skip string) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for sub := range s.subs {
		if skip != "" && sub.cluster == skip {
			continue
		}
		select {
		case sub.ch <- u:
		default:
			sub.once.Do(func() { close(sub.slow) })
		}
	}
}

// Subscribe streams everything newer than the caller's versions, then every
// change as it is committed.
func (s *Server) Subscribe(req *hubpb.SubscribeRequest, stream grpc.ServerStreamingServer[hubpb.SubscribeResponse]) error {
	c, err := s.identify(stream.Context())
	if err != nil {
		return err
	}
	sub := &subscriber{cluster: c.Cluster, ch: make(chan *hubpb.SubscribeResponse, subscriberBuffer), slow: make(chan struct{})}
	s.subMu.Lock()
	s.subs[sub] = struct{}{}
	s.subMu.Unlock()
	defer func() {
		s.subMu.Lock()
		delete(s.subs, sub)
		s.subMu.Unlock()
	}()
	// The backlog leaves out the caller's own slice, as fanout does.
	known := maps.Clone(req.GetKnown().GetVersions())
	if c.Cluster != "" {
		if known == nil {
			known = make(map[string]*registry.Version)
		}
		known[c.Cluster] = s.set.Version(c.Cluster)
	}
	backlog := s.set.Since(known)
	first := &hubpb.SubscribeResponse{Removals: s.removals(), ExternalBundles: s.externalBundles()}
	if err := membership.SendBatches(backlog, func(b []*registrypb.SignedRecord, last bool) error {
		resp := &hubpb.SubscribeResponse{Records: b, Synced: last}
		if last && c.Cluster != "" {
			resp.YourVersion = s.set.Version(c.Cluster)
		}
		if first != nil {
			resp.Removals, resp.ExternalBundles, first = first.Removals, first.ExternalBundles, nil
		}
		return stream.Send(resp)
	}); err != nil {
		return err
	}
	s.log.Debug("subscriber synced", "caller", c.ID, "records", len(backlog))
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-s.stopping:
			return status.Error(codes.Unavailable, "the hub is stopping; reconnect to resume from your versions")
		case <-sub.slow:
			return status.Error(codes.ResourceExhausted, "subscriber fell too far behind; reconnect to resume from your versions")
		case u := <-sub.ch:
			if len(u.GetRecords()) == 0 {
				if err := stream.Send(u); err != nil {
					return err
				}
				continue
			}
			if err := membership.SendBatches(u.GetRecords(), func(b []*registrypb.SignedRecord, _ bool) error {
				return stream.Send(&hubpb.SubscribeResponse{Records: b})
			}); err != nil {
				return err
			}
		}
	}
}

// Fetch returns every record newer than the caller's versions.
func (s *Server) Fetch(ctx context.Context, req *hubpb.FetchRequest) (*hubpb.FetchResponse, error) {
	if _, err := s.identify(ctx); err != nil {
		return nil, err
	}
	return &hubpb.FetchResponse{Records: s.set.Since(req.GetKnown().GetVersions())}, nil
}

func (s *Server) identify(ctx context.Context) (membership.Caller, error) {
	return membership.Identify(ctx, s.td, s.verifier)
}

// Status reports every cluster as the hub sees it.
func (s *Server) Status(ctx context.Context, _ *hubpb.StatusRequest) (*hubpb.StatusResponse, error) {
	if _, err := s.identify(ctx); err != nil {
		return nil, err
	}
	resp := gossip.BuildStatus(s.cfg.Mesh, "", s.set, s.live, s.gossip.Members(), s.cfg.Now())
	for _, im := range s.importers {
		resp.External = append(resp.External, im.status())
	}
	return resp, nil
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
