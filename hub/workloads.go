package hub

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networkingpb "istio.io/api/networking/v1alpha3"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/file"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
)

// Workload defaults.
const (
	// DefaultWorkloadGrace is how long a disconnected agent's entry stays,
	// unhealthy, before it is removed (Istio's PILOT_WORKLOAD_ENTRY_GRACE_PERIOD).
	DefaultWorkloadGrace = 10 * time.Second
	// DefaultWorkloadTokenTTL is how long a VM bootstrap token is valid.
	DefaultWorkloadTokenTTL = time.Hour
	// MaxWorkloadTokenTTL bounds it: the token is a bearer secret.
	MaxWorkloadTokenTTL = 24 * time.Hour
	// DefaultWorkloadSVIDTTL is the lifetime of a VM's SVID; the agent
	// renews it at half life with the SVID itself.
	DefaultWorkloadSVIDTTL = time.Hour

	workloadTokenPrefix = "fedvm1"
	maxWorkloadToken    = 2048
	metaWorkloadKey     = "workload-token-key"
	metaGroupPrefix     = "workloadgroup/"
	tokenWorkloadPrefix = "workload/"
	// AutoRegistrationAnnotation marks an entry's group, as in Istio.
	AutoRegistrationAnnotation = "istio.io/autoRegistrationGroup"
)

// WorkloadsConfig configures a control plane's VM workloads.
type WorkloadsConfig struct {
	Member *Member
	Store  *store.Store
	// ConfigDir is the file source's directory: its ServiceEntries'
	// workloadSelectors decide which services an entry joins.
	ConfigDir string
	// Grace is how long a disconnected entry stays (default DefaultWorkloadGrace).
	Grace time.Duration
	// SVIDTTL is the lifetime of the SVIDs agents get (default DefaultWorkloadSVIDTTL).
	SVIDTTL time.Duration
	// Policy returns the locality policy agents apply to an imported
	// service port (from its DestinationRule); nil means AgentPolicy.
	Policy func(host string, port uint32) locality.Policy
	Logger *slog.Logger
	Now    func() time.Time
}

// Workloads serves VM agents: it trades bootstrap tokens for SVIDs, keeps
// the auto-registered WorkloadEntries of connected agents and their health,
// and merges them into the services of the cluster's slice.
type Workloads struct {
	agentpb.UnimplementedWorkloadsServer

	cfg     WorkloadsConfig
	log     *slog.Logger
	changed chan struct{} // signalled when entries change

	mu       sync.Mutex // guards the fields below
	entries  map[string]*workloadEntry
	services []*registry.Service // the file source's latest, before merging
	loaded   bool                // services was set at least once
	notify   chan struct{}       // closed at the next change; agents' streams wait on it
}

// workloadEntry is an auto-registered WorkloadEntry.
type workloadEntry struct {
	namespace, name, group string
	address                string
	network                string
	locality               *registry.Locality
	labels                 map[string]string
	annotations            map[string]string
	appPorts               map[string]uint32 // template ports: service port name -> application port
	id                     spiffeid.ID
	weight                 uint32
	inboundPort            uint32
	probed                 bool
	healthy                bool
	healthMessage          string
	streams                int
	disconnectedAt         time.Time
}

func (e *workloadEntry) ready() bool { return e.streams > 0 && (e.healthy || !e.probed) }

// NewWorkloads validates cfg; it does no I/O.
func NewWorkloads(cfg WorkloadsConfig) (*Workloads, error) {
	if cfg.Member == nil || cfg.Store == nil {
		return nil, errors.New("hub: workloads need the member and its store")
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultWorkloadGrace
	}
	if cfg.SVIDTTL <= 0 {
		cfg.SVIDTTL = DefaultWorkloadSVIDTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Workloads{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "workloads"),
		changed: make(chan struct{}, 1),
		entries: make(map[string]*workloadEntry),
		notify:  make(chan struct{}),
	}, nil
}

// Register adds the Workloads API to the control plane's gRPC server.
func (w *Workloads) Register(s *grpc.Server) { agentpb.RegisterWorkloadsServer(s, w) }

// Run removes entries disconnected for longer than the grace period and
// calls publish after every change of the entries, once the file source
// has delivered its services. It returns nil when ctx is done.
func (w *Workloads) Run(ctx context.Context, publish func([]*registry.Service)) error {
	tick := time.NewTicker(min(time.Second, w.cfg.Grace/4))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			w.sweep()
			continue
		case <-w.changed:
		}
		w.mu.Lock()
		services, loaded := w.services, w.loaded
		w.mu.Unlock()
		if loaded {
			publish(services)
		}
	}
}

// sweep removes the entries whose grace period has passed.
func (w *Workloads) sweep() {
	now := w.cfg.Now()
	w.mu.Lock()
	var removed []string
	for key, e := range w.entries {
		if e.streams == 0 && now.Sub(e.disconnectedAt) >= w.cfg.Grace {
			delete(w.entries, key)
			removed = append(removed, key)
		}
	}
	if len(removed) > 0 {
		w.changeLocked()
	}
	w.mu.Unlock()
	for _, key := range removed {
		w.log.Info("workload entry removed after the grace period", "entry", key, "grace", w.cfg.Grace)
	}
}

func (w *Workloads) changeLocked() {
	close(w.notify)
	w.notify = make(chan struct{})
	signal(w.changed)
}

// Merge records the file source's services and returns them with every
// connected or recently disconnected entry added as an endpoint of the
// services whose workloadSelector selects it, as Istio does.
func (w *Workloads) Merge(services []*registry.Service) []*registry.Service {
	selectors := w.selectors()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.services, w.loaded = services, true
	out := make([]*registry.Service, len(services))
	for i, svc := range services {
		sel, ok := selectors[svc.GetHostname()]
		if !ok || len(w.entries) == 0 {
			out[i] = svc
			continue
		}
		c := proto.CloneOf(svc)
		for _, e := range w.sortedLocked() {
			if e.namespace != svc.GetNamespace() || !selects(sel, e.labels) {
				continue
			}
			c.Endpoints = append(c.Endpoints, e.endpoint(svc.GetPorts()))
		}
		out[i] = c
	}
	return out
}

func (w *Workloads) sortedLocked() []*workloadEntry {
	keys := slices.Sorted(maps.Keys(w.entries))
	out := make([]*workloadEntry, len(keys))
	for i, k := range keys {
		out[i] = w.entries[k]
	}
	return out
}

// endpoint is the entry as an endpoint of a service with ports: callers
// reach every port at the sidecar's inbound listener, which forwards by
// the service port named in the SNI.
func (e *workloadEntry) endpoint(ports []*registry.Port) *registry.Endpoint {
	ep := &registry.Endpoint{
		Address:  e.address,
		Ports:    make(map[string]uint32, len(ports)),
		Locality: proto.CloneOf(e.locality),
		Network:  e.network,
		Labels:   maps.Clone(e.labels),
		Health:   registrypb.Health_UNHEALTHY,
		SpiffeId: e.id.String(),
		Weight:   max(e.weight, 1),
	}
	if e.ready() {
		ep.Health = registrypb.Health_HEALTHY
	}
	for _, p := range ports {
		ep.Ports[p.GetName()] = e.inboundPort
	}
	return ep
}

// selectors reads the workloadSelector of every ServiceEntry in the
// config directory, by host. The file source reports broken files.
func (w *Workloads) selectors() map[string]map[string]string {
	out := make(map[string]map[string]string)
	if w.cfg.ConfigDir == "" {
		return out
	}
	entries, err := os.ReadDir(w.cfg.ConfigDir)
	if err != nil {
		return out
	}
	for _, de := range entries {
		ext := strings.ToLower(filepath.Ext(de.Name()))
		if strings.HasPrefix(de.Name(), ".") || ext != ".yaml" && ext != ".yml" {
			continue
		}
		p := filepath.Join(w.cfg.ConfigDir, de.Name())
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		docs, err := file.Parse(p, data)
		if err != nil {
			continue
		}
		for _, d := range docs {
			if se := d.ServiceEntry; se != nil && len(se.GetWorkloadSelector().GetLabels()) > 0 {
				out[se.GetHosts()[0]] = se.GetWorkloadSelector().GetLabels()
			}
		}
	}
	return out
}

// workloadGroup is a WorkloadGroup as the control plane stores it.
type workloadGroup struct {
	Namespace string          `json:"namespace"`
	Name      string          `json:"name"`
	Spec      json.RawMessage `json:"spec"`

	spec *networkingpb.WorkloadGroup
}

// ParseWorkloadGroupSpec decodes and checks a WorkloadGroup spec (JSON) of
// namespace/name; its errors name the field and what to do.
func ParseWorkloadGroupSpec(namespace, name string, spec []byte) (*networkingpb.WorkloadGroup, error) {
	ref := "WorkloadGroup " + namespace + "/" + name
	if !dnsLabel(namespace) {
		return nil, fmt.Errorf("%s: metadata.namespace %q is not a valid namespace: use up to 63 lowercase letters, digits and '-'", ref, namespace)
	}
	// The entry is named <group>-<ip>: keep room for an IPv6 address.
	if !dnsLabel(name) || len(name) > 63-40 {
		return nil, fmt.Errorf("%s: metadata.name %q must be up to 23 lowercase letters, digits and '-', so that <name>-<ip> is a valid name", ref, name)
	}
	wg := new(networkingpb.WorkloadGroup)
	if err := protojson.Unmarshal(spec, wg); err != nil {
		return nil, fmt.Errorf("%s: spec: %s", ref, strings.TrimPrefix(err.Error(), "proto: "))
	}
	t := wg.GetTemplate()
	if t == nil {
		return nil, fmt.Errorf("%s: spec.template is missing: it holds the serviceAccount and ports of the VMs", ref)
	}
	if t.GetServiceAccount() == "" {
		return nil, fmt.Errorf("%s: spec.template.serviceAccount is empty: set the service account whose identity the VMs get", ref)
	}
	if err := spiffeid.ValidatePathSegment(t.GetServiceAccount()); err != nil {
		return nil, fmt.Errorf("%s: spec.template.serviceAccount %q is not usable in a SPIFFE ID: %v", ref, t.GetServiceAccount(), err)
	}
	if t.GetAddress() != "" {
		return nil, fmt.Errorf("%s: spec.template.address must not be set: each VM registers its own address", ref)
	}
	for _, n := range slices.Sorted(maps.Keys(t.GetPorts())) {
		if p := t.GetPorts()[n]; p < 1 || p > 65535 {
			return nil, fmt.Errorf("%s: spec.template.ports[%q]: port %d is out of range: use 1-65535", ref, n, p)
		}
	}
	if t.GetLocality() != "" {
		if _, err := registry.ParseLocality(t.GetLocality()); err != nil {
			return nil, fmt.Errorf("%s: spec.template.locality: %w", ref, err)
		}
	}
	if p := wg.GetProbe(); p != nil {
		switch {
		case p.GetHttpGet() != nil:
			if port := p.GetHttpGet().GetPort(); port < 1 || port > 65535 {
				return nil, fmt.Errorf("%s: spec.probe.httpGet.port %d is out of range: use 1-65535", ref, port)
			}
		case p.GetTcpSocket() != nil:
			if port := p.GetTcpSocket().GetPort(); port < 1 || port > 65535 {
				return nil, fmt.Errorf("%s: spec.probe.tcpSocket.port %d is out of range: use 1-65535", ref, port)
			}
		case p.GetExec() != nil:
			if len(p.GetExec().GetCommand()) == 0 {
				return nil, fmt.Errorf("%s: spec.probe.exec.command is empty: give the command to run", ref)
			}
		case p.GetGrpc() != nil:
			return nil, fmt.Errorf("%s: spec.probe.grpc is not supported: use httpGet, tcpSocket or exec", ref)
		default:
			return nil, fmt.Errorf("%s: spec.probe has no check: set httpGet, tcpSocket or exec", ref)
		}
	}
	return wg, nil
}

func (w *Workloads) loadGroup(namespace, name string) (*workloadGroup, error) {
	data, err := w.cfg.Store.Get(store.BucketMeta, metaGroupPrefix+namespace+"/"+name)
	if err != nil {
		return nil, err
	}
	if data == nil {
		return nil, nil
	}
	g := new(workloadGroup)
	if err := json.Unmarshal(data, g); err != nil {
		return nil, fmt.Errorf("stored WorkloadGroup %s/%s: %w", namespace, name, err)
	}
	if g.spec, err = ParseWorkloadGroupSpec(namespace, name, g.Spec); err != nil {
		return nil, err
	}
	return g, nil
}

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
func (w *Workloads) tokenKey(ctx context.Context) ([]byte, error) {
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
func (w *Workloads) CreateBootstrap(ctx context.Context, req *agentpb.CreateBootstrapRequest) (*agentpb.CreateBootstrapResponse, error) {
	m := w.cfg.Member
	caller, err := trust.PeerID(ctx)
	if err != nil || caller != AdminID(m.td) && caller != ClusterID(m.td, m.cfg.Cluster) {
		return nil, status.Errorf(codes.PermissionDenied, "only the admin or cluster %s's own credential may onboard VMs", m.cfg.Cluster)
	}
	wg, err := ParseWorkloadGroupSpec(req.GetNamespace(), req.GetName(), req.GetSpecJson())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	if ttl <= 0 {
		ttl = DefaultWorkloadTokenTTL
	}
	if ttl > MaxWorkloadTokenTTL {
		return nil, status.Errorf(codes.InvalidArgument, "a token lifetime of %s is longer than %s: the token is a bearer secret, keep it short", ttl, MaxWorkloadTokenTTL)
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
		ID: base64.RawURLEncoding.EncodeToString(id), Cluster: m.cfg.Cluster,
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
		Mesh:           m.cfg.Mesh,
		TrustDomain:    m.authority.TrustDomain().String(),
		ControlPlaneId: ClusterID(m.td, m.cfg.Cluster).String(),
	}
	resp.RootCerts = trust.EncodeCertificates(m.cfg.CA...)
	resp.RootCerts = append(resp.RootCerts, trust.EncodeCertificates(m.authority.Bundle().X509Authorities()...)...)
	if info := m.ownInfo(); info != nil {
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
func (w *Workloads) Bootstrap(ctx context.Context, req *agentpb.BootstrapRequest) (*agentpb.BootstrapResponse, error) {
	m := w.cfg.Member
	key, err := w.tokenKey(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "token key: %v", err)
	}
	claims, err := parseWorkloadToken(key, req.GetToken())
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if claims.Cluster != m.cfg.Cluster {
		return nil, status.Errorf(codes.Unauthenticated, "the token is for cluster %q, not %q", claims.Cluster, m.cfg.Cluster)
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
	id, err := spiffeid.FromSegments(m.authority.TrustDomain(), "ns", claims.Namespace, "sa", g.spec.GetTemplate().GetServiceAccount())
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	chain, err := m.authority.IssueCSR(req.GetCsr(), id, w.cfg.SVIDTTL)
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
func (w *Workloads) Renew(ctx context.Context, req *agentpb.RenewRequest) (*agentpb.RenewResponse, error) {
	m := w.cfg.Member
	caller, err := trust.PeerID(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "renewal needs the SVID to renew as client certificate")
	}
	if !caller.MemberOf(m.authority.TrustDomain()) || namespaceOf(caller) == "" {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not a workload of trust domain %s", caller, m.authority.TrustDomain())
	}
	chain, err := m.authority.IssueCSR(req.GetCsr(), caller, w.cfg.SVIDTTL)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate request: %v", err)
	}
	return &agentpb.RenewResponse{Certificates: ders(chain)}, nil
}

func ders(chain []*x509.Certificate) [][]byte {
	out := make([][]byte, len(chain))
	for i, c := range chain {
		out[i] = c.Raw
	}
	return out
}

// EntryName is Istio's name for an auto-registered entry: <group>-<ip>,
// with the colons of an IPv6 address as dashes.
func EntryName(group, address string) string {
	return group + "-" + strings.ReplaceAll(address, ":", "-")
}

// Connect registers the calling agent's WorkloadEntry for the life of the
// stream, applies its health reports and sends its configuration.
func (w *Workloads) Connect(stream grpc.BidiStreamingServer[agentpb.AgentMessage, agentpb.AgentConfig]) error {
	ctx := stream.Context()
	m := w.cfg.Member
	caller, err := trust.PeerID(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, "connect with the VM's SVID as client certificate")
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegister()
	if reg == nil {
		return status.Error(codes.InvalidArgument, "the first message must be a registration")
	}
	ns := namespaceOf(caller)
	if !caller.MemberOf(m.authority.TrustDomain()) || ns == "" {
		return status.Errorf(codes.PermissionDenied, "%s is not a workload of trust domain %s", caller, m.authority.TrustDomain())
	}
	g, err := w.loadGroup(ns, reg.GetGroup())
	if err != nil || g == nil {
		return status.Errorf(codes.FailedPrecondition, "cannot find WorkloadGroup %s/%s: run 'federate vm configure' for it", ns, reg.GetGroup())
	}
	if want := "/ns/" + ns + "/sa/" + g.spec.GetTemplate().GetServiceAccount(); caller.Path() != want {
		return status.Errorf(codes.PermissionDenied, "%s may not register in WorkloadGroup %s/%s, whose identity is %s", caller, ns, reg.GetGroup(), want)
	}
	addr, err := netip.ParseAddr(reg.GetAddress())
	if err != nil || addr.Zone() != "" {
		return status.Errorf(codes.InvalidArgument, "address %q is not an IP address", reg.GetAddress())
	}
	if p := reg.GetInboundPort(); p < 1 || p > 65535 {
		return status.Errorf(codes.InvalidArgument, "inbound port %d is out of range", p)
	}
	key := w.connect(g, caller, addr.String(), reg)
	defer w.disconnect(key)

	recvErr := make(chan error, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if h := msg.GetHealth(); h != nil {
				w.setHealth(key, h.GetHealthy(), h.GetMessage())
			}
		}
	}()
	var last *agentpb.AgentConfig
	for {
		w.mu.Lock()
		wake := w.notify
		w.mu.Unlock()
		viewChanged := m.Changed()
		cfg := w.agentConfig(key, reg.GetImports())
		if !proto.Equal(cfg, last) {
			if err := stream.Send(cfg); err != nil {
				return err
			}
			last = cfg
		}
		select {
		case <-ctx.Done():
			return nil
		case <-recvErr:
			return nil
		case <-wake:
		case <-viewChanged:
		}
	}
}

// connect creates or revives the entry of a registering agent.
func (w *Workloads) connect(g *workloadGroup, id spiffeid.ID, address string, reg *agentpb.Register) string {
	m := w.cfg.Member
	t := g.spec.GetTemplate()
	name := EntryName(g.Name, address)
	key := g.Namespace + "/" + name
	// Labels: template, then the group's metadata, as Istio merges them.
	labels := maps.Clone(t.GetLabels())
	if labels == nil {
		labels = make(map[string]string)
	}
	maps.Copy(labels, g.spec.GetMetadata().GetLabels())
	annotations := maps.Clone(g.spec.GetMetadata().GetAnnotations())
	if annotations == nil {
		annotations = make(map[string]string)
	}
	annotations[AutoRegistrationAnnotation] = g.Name
	info := m.ownInfo()
	loc := info.GetLocality()
	if l, err := registry.ParseLocality(t.GetLocality()); err == nil && t.GetLocality() != "" {
		loc = l
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.entries[key]
	if e == nil {
		e = &workloadEntry{namespace: g.Namespace, name: name, group: g.Name}
		w.entries[key] = e
		w.log.Info("workload entry registered", "entry", key, "id", id)
	} else if e.streams == 0 {
		w.log.Info("workload entry reconnected", "entry", key)
	}
	e.address, e.id = address, id
	e.network = cmp.Or(t.GetNetwork(), info.GetNetwork())
	e.locality = proto.CloneOf(loc)
	e.labels, e.annotations = labels, annotations
	e.appPorts = maps.Clone(t.GetPorts())
	e.weight = t.GetWeight()
	e.inboundPort = reg.GetInboundPort()
	e.probed = reg.GetProbed()
	if e.streams == 0 {
		e.healthy = false // a probed entry waits for its first report
	}
	e.streams++
	w.changeLocked()
	return key
}

func (w *Workloads) disconnect(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.entries[key]
	if e == nil {
		return
	}
	e.streams--
	if e.streams == 0 {
		e.disconnectedAt = w.cfg.Now()
		w.log.Info("workload entry disconnected; unhealthy until it reconnects", "entry", key, "removed_after", w.cfg.Grace)
		w.changeLocked()
	}
}

func (w *Workloads) setHealth(key string, healthy bool, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.entries[key]
	if e == nil || e.healthy == healthy && e.healthMessage == msg {
		return
	}
	e.healthy, e.healthMessage = healthy, msg
	w.log.Info("workload health changed", "entry", key, "healthy", healthy, "message", msg)
	w.changeLocked()
}

// EntryStatus is an entry as 'federate status' and tests see it.
type EntryStatus struct {
	Namespace, Name, Group, Address string
	Connected, Healthy              bool
	Labels, Annotations             map[string]string
}

// Entries returns the current entries.
func (w *Workloads) Entries() []EntryStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []EntryStatus
	for _, e := range w.sortedLocked() {
		out = append(out, EntryStatus{
			Namespace: e.namespace, Name: e.name, Group: e.group, Address: e.address,
			Connected: e.streams > 0, Healthy: e.ready(),
			Labels: maps.Clone(e.labels), Annotations: maps.Clone(e.annotations),
		})
	}
	return out
}

// agentConfig is what the agent of entry key needs: bundles, its inbound
// ports, and where its imported services are.
func (w *Workloads) agentConfig(key string, imports []string) *agentpb.AgentConfig {
	m := w.cfg.Member
	w.mu.Lock()
	e := w.entries[key]
	network, entryLocality := e.network, proto.CloneOf(e.locality)
	labels, appPorts, ns := maps.Clone(e.labels), maps.Clone(e.appPorts), e.namespace
	services := w.services
	w.mu.Unlock()

	cfg := &agentpb.AgentConfig{Entry: key, Network: network, Locality: entryLocality}
	own := m.authority.TrustDomain()
	cfg.Bundles = append(cfg.Bundles, &agentpb.TrustBundle{TrustDomain: own.String(), Roots: ders(m.authority.Bundle().X509Authorities())})
	for _, td := range m.bundles.TrustDomains() {
		if td == own {
			continue
		}
		if b, err := m.bundles.GetX509BundleForTrustDomain(td); err == nil {
			cfg.Bundles = append(cfg.Bundles, &agentpb.TrustBundle{TrustDomain: td.String(), Roots: ders(b.X509Authorities())})
		}
	}
	slices.SortFunc(cfg.Bundles, func(a, b *agentpb.TrustBundle) int { return strings.Compare(a.GetTrustDomain(), b.GetTrustDomain()) })

	selectors := w.selectors()
	for _, svc := range services {
		sel, ok := selectors[svc.GetHostname()]
		if !ok || svc.GetNamespace() != ns || !selects(sel, labels) {
			continue
		}
		for _, p := range svc.GetPorts() {
			cfg.Inbound = append(cfg.Inbound, &agentpb.Inbound{
				Hostname: svc.GetHostname(), Port: p.GetNumber(), TargetPort: cmp.Or(appPorts[p.GetName()], p.GetNumber()),
			})
		}
	}

	infos := make(map[string]*registry.ClusterInfo)
	for _, s := range m.set.Summaries() {
		infos[s.Cluster] = s.Info
	}
	client := locality.Client{Locality: locality.FromProto(entryLocality), Network: network, Cluster: m.cfg.Cluster, Labels: labels}
	for _, host := range slices.Sorted(slices.Values(imports)) {
		up := &agentpb.Upstream{Hostname: host, Balance: make(map[uint32]*agentpb.Balance)}
		var sources []locality.Source
		for _, cluster := range slices.Sorted(slices.Values(m.Clusters())) {
			for _, svc := range m.Services(cluster) {
				if svc.GetHostname() != host {
					continue
				}
				if len(up.Ports) == 0 {
					up.Ports = svc.GetPorts()
				}
				sources = append(sources, locality.Source{Cluster: cluster, Info: infos[cluster], Service: svc})
			}
		}
		for _, p := range up.Ports {
			up.Targets = append(up.Targets, w.targets(client, p, sources, up)...)
		}
		cfg.Upstreams = append(cfg.Upstreams, up)
	}
	return cfg
}

// targets returns where an agent reaches service port p (Istio's
// split-horizon EDS): endpoints on its network directly, the others
// through their cluster's gateway, weighted by the endpoints behind it;
// each with the priority and locality weight that the locality policy
// gives it for this client, which the agent's picker applies. The port's
// remaining balancing settings go into up.Balance.
func (w *Workloads) targets(client locality.Client, p *registry.Port, sources []locality.Source, up *agentpb.Upstream) []*agentpb.Target {
	// The SPIFFE IDs a target may present: an endpoint's own, or for a
	// gateway those of every endpoint on its network.
	direct := make(map[string]string)
	byNetwork := make(map[string][]string)
	for _, src := range sources {
		for _, ep := range src.Service.GetEndpoints() {
			id := ep.GetSpiffeId()
			if id == "" {
				continue
			}
			net := cmp.Or(ep.GetNetwork(), src.Info.GetNetwork())
			direct[ep.GetAddress()+"\x00"+net] = id
			if !slices.Contains(byNetwork[net], id) {
				byNetwork[net] = append(byNetwork[net], id)
			}
		}
	}
	endpoints, warnings := locality.SplitHorizon(client.Network, p, sources)
	for _, wn := range warnings {
		w.log.Debug("agent upstream", "host", up.GetHostname(), "port", p.GetNumber(), "warning", wn.String())
	}
	prios := locality.Assign(w.policy(up.GetHostname(), p.GetNumber()), client, endpoints)
	up.Balance[p.GetNumber()] = &agentpb.Balance{
		LocalityWeighted: prios.LocalityWeighted, PanicThreshold: prios.PanicThreshold, Overprovisioning: prios.Overprovisioning,
	}
	var out []*agentpb.Target
	for _, g := range prios.Groups {
		for _, e := range g.Endpoints {
			t := &agentpb.Target{
				Cluster: e.Cluster, Address: e.Address, Ports: map[uint32]uint32{p.GetNumber(): e.Port},
				Gateway:  e.Network != "" && e.Network != client.Network,
				Locality: e.Locality.Proto(), Health: e.Health, Weight: max(e.Weight, 1),
				Priority: g.Priority, LocalityWeight: g.Weight,
			}
			if t.Gateway {
				t.SpiffeIds = slices.Clone(byNetwork[e.Network])
			} else if id := direct[e.Address+"\x00"+e.Network]; id != "" {
				t.SpiffeIds = []string{id}
			}
			out = append(out, t)
		}
	}
	return out
}

// policy is the locality policy of an imported service port for agents.
func (w *Workloads) policy(host string, port uint32) locality.Policy {
	if w.cfg.Policy != nil {
		return w.cfg.Policy(host, port)
	}
	return AgentPolicy()
}

// AgentPolicy is the policy of a service without a DestinationRule, as
// agents apply it: the mesh default with outlier detection on, since the
// sidecar moves to another target whenever a connect fails; so agents
// prefer their own locality while it is healthy, like the gateways.
func AgentPolicy() locality.Policy {
	p := locality.DefaultPolicy()
	p.OutlierDetection = true
	return p
}

// selects reports whether every label of sel is in labels.
func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// dnsLabel reports whether s is an RFC 1123 label.
func dnsLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
