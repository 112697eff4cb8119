package hub

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// issueOwn issues a credential from the hub CA with a fresh key.
func (s *Server) issueOwn(id spiffeid.ID, ttl time.Duration) (*trust.Credential, error) {
	return issueFrom(s.ca, id, ttl, s.cfg.Now())
}

// writeAdmin writes the CA and an admin credential for the CLI, keeping
// an admin credential of this CA with more than 30 days left.
func (s *Server) writeAdmin() error {
	if err := writeCAPEM(s.ca, s.cfg.DataDir); err != nil {
		return err
	}
	path := filepath.Join(s.cfg.DataDir, AdminCredFile)
	if c, err := trust.LoadCredential(path); err == nil && s.cfg.Now().Add(30*24*time.Hour).Before(c.Expiry()) && c.Leaf().CheckSignatureFrom(s.ca.Cert) == nil {
		return nil
	}
	_, err := issueAdmin(s.ca, s.cfg.DataDir, 365*24*time.Hour, s.cfg.Now())
	return err
}

// Join trades a one-time token for a cluster credential.
func (s *Server) Join(ctx context.Context, req *hubpb.JoinRequest) (*hubpb.JoinResponse, error) {
	tok, err := membership.ParseToken(req.GetToken())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	data, err := s.backend.Get(ctx, store.BucketTokens, tok.ID)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read token: %v", err)
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
	names, err := credentialNames(rec.Cluster, td, req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.claimServingNames(ctx, rec.Cluster, names); err != nil {
		s.log.Warn("join refused", "cluster", rec.Cluster, "err", err)
		return nil, err
	}
	cert, err := s.ca.IssueCSR(req.GetCsr(), id, s.cfg.CredentialTTL, s.issueTime(rec.Cluster, now), names...)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	rec.UsedAt = now
	used, _ := json.Marshal(rec)
	// The token's use and the credential are recorded together: a removal
	// lists the credential, even of a cluster that never publishes. The
	// write happens only if the token is as read: of concurrent joins with
	// one token, on any replicas, one wins.
	won, err := s.writeIf(ctx, store.BucketTokens, tok.ID, data, store.Op{Bucket: store.BucketTokens, Key: tok.ID, Value: used}, recordCredential(rec.Cluster, cert, now))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "record token use: %v", err)
	}
	if !won {
		s.log.Warn("join refused: token used concurrently", "cluster", tok.Cluster)
		return nil, status.Errorf(codes.PermissionDenied, "%v by a concurrent join; create a new one with 'federate token create'", membership.ErrTokenUsed)
	}
	s.log.Info("cluster joined", "cluster", rec.Cluster, "id", id)
	return &hubpb.JoinResponse{
		Mesh:         s.cfg.Mesh,
		Cluster:      rec.Cluster,
		Certificates: [][]byte{cert.Raw, s.ca.Cert.Raw},
		Ca:           s.ca.Cert.Raw,
		GossipSeeds:  s.gossipSeeds(ctx),
	}, nil
}

func (s *Server) gossipSeeds(ctx context.Context) []string {
	var seeds []string
	for _, r := range s.replicas(ctx) {
		if r.Gossip != "" && !slices.Contains(seeds, r.Gossip) {
			seeds = append(seeds, r.Gossip)
		}
	}
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
	td := registry.DefaultTrustDomain(c.Cluster, s.cfg.Mesh)
	if len(current.DNSNames) > 0 {
		td = current.DNSNames[0]
	}
	now := s.cfg.Now()
	names, err := credentialNames(c.Cluster, td, req.GetCsr())
	if err != nil {
		s.log.Warn("renewal refused", "cluster", c.Cluster, "err", err)
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := s.claimServingNames(ctx, c.Cluster, names); err != nil {
		s.log.Warn("renewal refused", "cluster", c.Cluster, "err", err)
		return nil, err
	}
	cert, err := s.ca.IssueCSR(req.GetCsr(), c.ID, s.cfg.CredentialTTL, now, names...)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// A credential the hub cannot record is not issued: a removal must be
	// able to list it. Expired ones are forgotten on the way.
	issued, err := s.issuedCredentials(ctx, c.Cluster)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read credentials: %v", err)
	}
	if err := s.write(ctx, append(expiredCredentialOps(c.Cluster, issued, now), recordCredential(c.Cluster, cert, now))...); err != nil {
		return nil, status.Errorf(codes.Unavailable, "record credential: %v", err)
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
	if ttl > MaxTokenTTL {
		return nil, status.Errorf(codes.InvalidArgument, "token ttl %s exceeds the limit of %s", ttl, MaxTokenTTL)
	}
	tok, err := membership.NewToken(req.GetCluster(), s.hubAddrs(ctx), trust.Fingerprint(s.ca.Cert), s.cfg.Now().Add(ttl))
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if td := req.GetTrustDomain(); td != "" {
		if _, err := spiffeid.TrustDomainFromString(td); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "trust domain %q: %v", td, err)
		}
	}
	data, _ := json.Marshal(tokenRecord{Cluster: tok.Cluster, TrustDomain: req.GetTrustDomain(), Expires: tok.Expires, SecretHash: hashSecret(tok.Secret)})
	if err := s.write(ctx, store.Op{Bucket: store.BucketTokens, Key: tok.ID, Value: data}); err != nil {
		return nil, status.Errorf(codes.Unavailable, "store token: %v", err)
	}
	s.log.Info("join token created", "cluster", tok.Cluster, "expires", tok.Expires)
	return &hubpb.CreateTokenResponse{Token: tok.String(), ExpiresAt: tok.Expires.Unix()}, nil
}
