package workloads

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
)

// workloadClaims is the signed part of a VM bootstrap token.
type workloadClaims struct {
	ID        string    `json:"id"`
	Cluster   string    `json:"cluster"`
	Namespace string    `json:"ns"`
	Group     string    `json:"group"`
	Expires   time.Time `json:"exp"`
}

// workloadTokenRecord is what the store keeps of a token: enough to refuse
// a second use.
type workloadTokenRecord struct {
	Namespace string    `json:"ns"`
	Group     string    `json:"group"`
	Expires   time.Time `json:"expires"`
	UsedAt    time.Time `json:"usedAt,omitzero"`
	UsedBy    string    `json:"usedBy,omitempty"`
}

// tokenKey returns the key that signs VM tokens, creating it on first use.
func (w *Server) tokenKey(ctx context.Context) ([]byte, error) {
	key, err := w.cfg.Store.Get(store.BucketMeta, metaWorkloadKey)
	if err != nil || len(key) == 32 {
		return key, err
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := w.cfg.Store.Write(ctx, store.Op{Bucket: store.BucketMeta, Key: metaWorkloadKey, Value: key}); err != nil {
		return nil, err
	}
	return key, nil
}

func signClaims(key []byte, claims string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(workloadTokenPrefix + "." + claims))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// parseWorkloadToken checks a token's form and signature.
func parseWorkloadToken(key []byte, token string) (*workloadClaims, error) {
	token = strings.TrimSpace(token)
	parts := strings.Split(token, ".")
	if len(token) > maxWorkloadToken || len(parts) != 3 || parts[0] != workloadTokenPrefix {
		return nil, errors.New("the token is malformed: want " + workloadTokenPrefix + ".<claims>.<signature>, as 'federate vm configure' writes it")
	}
	if !hmac.Equal([]byte(signClaims(key, parts[1])), []byte(parts[2])) {
		return nil, errors.New("the token was not issued by this control plane (or was altered): run 'federate vm configure' for this cluster")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("the token's claims: %w", err)
	}
	c := new(workloadClaims)
	if err := json.Unmarshal(raw, c); err != nil {
		return nil, fmt.Errorf("the token's claims: %w", err)
	}
	return c, nil
}

// CreateBootstrap records a WorkloadGroup and mints a token bound to it.
func (w *Server) CreateBootstrap(ctx context.Context, req *agentpb.CreateBootstrapRequest) (*agentpb.CreateBootstrapResponse, error) {
	m := w.cfg.Federation
	caller, err := trust.PeerID(ctx)
	if err != nil || caller != membership.AdminID(meshTD(m)) && caller != membership.ClusterID(meshTD(m), m.Cluster()) {
		return nil, status.Errorf(codes.PermissionDenied, "only the admin or cluster %s's own credential may onboard VMs", m.Cluster())
	}
	wg, err := ParseWorkloadGroupSpec(req.GetNamespace(), req.GetName(), req.GetSpecJson())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	if ttl > MaxTokenTTL {
		return nil, status.Errorf(codes.InvalidArgument, "a token lifetime of %s is longer than %s: the token is a bearer secret, keep it short", ttl, MaxTokenTTL)
	}
	key, err := w.tokenKey(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "token key: %v", err)
	}
	spec, err := protojson.Marshal(wg)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	group, err := json.Marshal(workloadGroup{Namespace: req.GetNamespace(), Name: req.GetName(), Spec: spec})
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	id := make([]byte, 12)
	if _, err := rand.Read(id); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	claims := workloadClaims{
		ID: base64.RawURLEncoding.EncodeToString(id), Cluster: m.Cluster(),
		Namespace: req.GetNamespace(), Group: req.GetName(), Expires: w.cfg.Now().Add(ttl).UTC().Truncate(time.Second),
	}
	cj, _ := json.Marshal(claims)
	rec, _ := json.Marshal(workloadTokenRecord{Namespace: claims.Namespace, Group: claims.Group, Expires: claims.Expires})
	if err := w.cfg.Store.Write(ctx,
		store.Op{Bucket: store.BucketMeta, Key: metaGroupPrefix + req.GetNamespace() + "/" + req.GetName(), Value: group},
		store.Op{Bucket: store.BucketTokens, Key: tokenWorkloadPrefix + claims.ID, Value: rec},
	); err != nil {
		return nil, status.Errorf(codes.Internal, "store: %v", err)
	}
	claimsB64 := base64.RawURLEncoding.EncodeToString(cj)
	resp := &agentpb.CreateBootstrapResponse{
		Token:          workloadTokenPrefix + "." + claimsB64 + "." + signClaims(key, claimsB64),
		Expires:        claims.Expires.Unix(),
		Mesh:           m.Mesh(),
		TrustDomain:    m.Authority().TrustDomain().String(),
		ControlPlaneId: membership.ClusterID(meshTD(m), m.Cluster()).String(),
	}
	resp.RootCerts = trust.EncodeCertificates(m.MeshCA()...)
	resp.RootCerts = append(resp.RootCerts, trust.EncodeCertificates(m.Authority().Bundle().X509Authorities()...)...)
	if info := w.ownInfo(); info != nil {
		resp.Network = info.GetNetwork()
		resp.Locality = registry.FormatLocality(info.GetLocality())
		if gws := info.GetGateways(); len(gws) > 0 {
			resp.Gateway = joinHostPort(gws[0].GetAddress(), gws[0].GetPort())
		}
	}
	w.log.Info("VM bootstrap token created", "group", req.GetNamespace()+"/"+req.GetName(), "expires", claims.Expires, "by", caller)
	return resp, nil
}

func joinHostPort(host string, port uint32) string {
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a, uint16(port)).String()
	}
	return fmt.Sprintf("%s:%d", host, port)
}

// Bootstrap trades a token for an SVID of its group's service account.
// The token is used up only once the certificate is issued.
func (w *Server) Bootstrap(ctx context.Context, req *agentpb.BootstrapRequest) (*agentpb.BootstrapResponse, error) {
	m := w.cfg.Federation
	key, err := w.tokenKey(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "token key: %v", err)
	}
	claims, err := parseWorkloadToken(key, req.GetToken())
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if claims.Cluster != m.Cluster() {
		return nil, status.Errorf(codes.Unauthenticated, "the token is for cluster %q, not %q", claims.Cluster, m.Cluster())
	}
	now := w.cfg.Now()
	if now.After(claims.Expires) {
		return nil, status.Errorf(codes.Unauthenticated, "the token expired at %s: run 'federate vm configure' again for a new one", claims.Expires.Format(time.RFC3339))
	}
	w.mu.Lock() // one use at a time, so two agents cannot both spend it
	defer w.mu.Unlock()
	raw, err := w.cfg.Store.Get(store.BucketTokens, tokenWorkloadPrefix+claims.ID)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "store: %v", err)
	}
	if raw == nil {
		return nil, status.Error(codes.Unauthenticated, "the token is unknown to this control plane (its store was reset?): run 'federate vm configure' again")
	}
	var rec workloadTokenRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, status.Errorf(codes.Internal, "stored token: %v", err)
	}
	if !rec.UsedAt.IsZero() {
		return nil, status.Errorf(codes.Unauthenticated, "the token was already used at %s by %s: a token is good for one bootstrap; run 'federate vm configure' again", rec.UsedAt.Format(time.RFC3339), rec.UsedBy)
	}
	g, err := w.loadGroup(claims.Namespace, claims.Group)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "WorkloadGroup %s/%s: %v", claims.Namespace, claims.Group, err)
	}
	if g == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "cannot find WorkloadGroup %s/%s: run 'federate vm configure' again", claims.Namespace, claims.Group)
	}
	id, err := spiffeid.FromSegments(m.Authority().TrustDomain(), "ns", claims.Namespace, "sa", g.spec.GetTemplate().GetServiceAccount())
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	chain, err := m.Authority().IssueCSR(req.GetCsr(), id, w.cfg.SVIDTTL)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate request: %v", err)
	}
	rec.UsedAt, rec.UsedBy = now.UTC(), id.String()
	val, _ := json.Marshal(rec)
	if err := w.cfg.Store.Write(ctx, store.Op{Bucket: store.BucketTokens, Key: tokenWorkloadPrefix + claims.ID, Value: val}); err != nil {
		return nil, status.Errorf(codes.Internal, "store: %v", err)
	}
	w.log.Info("VM bootstrapped", "group", claims.Namespace+"/"+claims.Group, "id", id, "expires", chain[0].NotAfter)
	return &agentpb.BootstrapResponse{Certificates: ders(chain)}, nil
}

// Renew signs a new SVID for the caller's own ID.
func (w *Server) Renew(ctx context.Context, req *agentpb.RenewRequest) (*agentpb.RenewResponse, error) {
	m := w.cfg.Federation
	caller, err := trust.PeerID(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "renewal needs the SVID to renew as client certificate")
	}
	if !caller.MemberOf(m.Authority().TrustDomain()) || trust.NamespaceOf(caller) == "" {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not a workload of trust domain %s", caller, m.Authority().TrustDomain())
	}
	chain, err := m.Authority().IssueCSR(req.GetCsr(), caller, w.cfg.SVIDTTL)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate request: %v", err)
	}
	return &agentpb.RenewResponse{Certificates: ders(chain)}, nil
}

// Bundles returns the federated roots to a workload of this trust domain.
func (w *Server) Bundles(ctx context.Context, _ *agentpb.BundlesRequest) (*agentpb.BundlesResponse, error) {
	caller, err := trust.PeerID(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "bundles need a workload SVID as client certificate")
	}
	if own := w.cfg.Federation.Authority().TrustDomain(); !caller.MemberOf(own) || trust.NamespaceOf(caller) == "" {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not a workload of trust domain %s", caller, own)
	}
	return &agentpb.BundlesResponse{Bundles: w.trustBundles()}, nil
}

func ders(chain []*x509.Certificate) [][]byte {
	out := make([][]byte, len(chain))
	for i, c := range chain {
		out[i] = c.Raw
	}
	return out
}
