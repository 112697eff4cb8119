package controlplane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"k8s.io/client-go/tools/leaderelection"

	"github.com/federate/federate/controlplane/internal/connguard"
	"github.com/federate/federate/controlplane/routing"
	"github.com/federate/federate/controlplane/workloads"
	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/member"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/file"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
)

// Files in a control plane's data directory, beside what 'federate join'
// wrote there.
const (
	// StoreFile is the bbolt file of the control plane's state.
	StoreFile = "controlplane.db"
	// GatewayCredentialFile is the east-west gateway's first SVID.
	GatewayCredentialFile = "gateway.pem"
)

// GatewayPath is the east-west gateway's SPIFFE ID path, as in Istio.
const GatewayPath = "/ns/istio-system/sa/eastwest-gateway"

// Defaults of the addresses a control plane listens on.
const (
	DefaultListen = "0.0.0.0:15013"
	DefaultGossip = "0.0.0.0:15014"
)

// Source delivers the cluster's exported services: the file source, the
// Kubernetes source, or a test's own. publish may be called from any
// goroutine, with the full set each time.
type Source interface {
	Run(ctx context.Context, publish func([]*registry.Service)) error
}

// Config configures a control plane. Cluster, Network and DataDir are
// required, and one of ConfigDir, Kube or Source.
type Config struct {
	Cluster  string
	Network  string
	Locality *registry.Locality
	// DataDir holds what 'federate join' wrote (or Kube restores there), the
	// store and, by default, the gateway's first SVID.
	DataDir string
	// ConfigDir holds Istio YAML: ServiceEntries and WorkloadEntries (the
	// file source, unless Kube or Source is set), DestinationRules and the
	// workloadSelectors VM entries join.
	ConfigDir string
	// ConfigInterval is how often the file source reads ConfigDir; zero
	// means file.DefaultInterval.
	ConfigInterval time.Duration
	// Kube, if set, takes services from the cluster's API and keeps the
	// membership in a Secret there.
	Kube *Kube
	// Source, if set, replaces the file and Kubernetes sources.
	Source Source
	// IstioWrite, with Kube, writes into the cluster what an unmodified
	// istiod needs to route its sidecars to the other clusters' services
	// through their gateways: ServiceEntries, WorkloadEntries and gateway
	// Services (package istiod; docs/istio.md).
	IstioWrite bool

	// Listen is the federation API's address (peer fetch, status, CSR,
	// xDS, VM workloads); Advertise is what peers dial (default: Gateway,
	// which routes internal names here, else the bound address).
	Listen    string
	Advertise string
	// GossipBind is the gossip address; GossipProfile is wan or lan.
	GossipBind     string
	GossipProfile  string
	GossipRejoin   time.Duration
	GossipSeeds    []string // beyond those of the membership
	Gateway        string   // this cluster's east-west gateway, host:port
	InternalHost   string   // host the gateway dials for this control plane
	Timers         gossip.Timers
	Probe          routing.ProbeConfig
	RulesInterval  time.Duration
	TrustDomain    string // default <cluster>.<mesh>
	PluginCADir    string // Istio cacerts files; default a generated root
	MaxSVIDTTL     time.Duration
	BundleRefresh  time.Duration
	GatewaySVIDOut string // default DataDir/GatewayCredentialFile
	VMGrace        time.Duration
	VMSVIDTTL      time.Duration
	// The API's limits on connections that have not shown who they are:
	// the TLS handshake, a connection without a client certificate, and
	// one without an open stream (defaults 5s, 10s and 30s).
	HandshakeTimeout       time.Duration
	UnauthenticatedTimeout time.Duration
	IdleTimeout            time.Duration
	// LeaderElection, with Kube, runs the control plane only while this
	// replica holds a Lease; the others stand by (see LeaderElection).
	LeaderElection *LeaderElection
	// ServingNames are DNS names and IP addresses the control plane's
	// certificate carries besides its internal name, for proxyless gRPC
	// applications that dial it by them (see member.Config.ServingNames).
	ServingNames []string
	// Imports are the services (hostnames) the cluster imports; "*" or
	// nil is every service, as before scoped import. A non-nil, empty
	// list imports none but those the sources name (ImportServiceImports).
	// SetImports changes the list while the control plane runs.
	Imports []string
	// ImportServiceImports, with Kube, also imports the services that the
	// cluster's own ServiceImports (those federate does not manage) name:
	// the cluster imports only what they and Imports name.
	ImportServiceImports bool
	// ImportIstio, with Kube, also imports what the cluster's Istio
	// Sidecars (egress hosts) and its Services' and ServiceEntries'
	// exportTo name, as Istio computes what each namespace reaches
	// (file.IstioImports; docs/imports.md): the cluster imports only what
	// the sources name. The config directory's ServiceImports and
	// Sidecars are read without a setting: their presence scopes the
	// cluster. The VM agents' outbound lists add to any scope.
	ImportIstio bool
	Logger      *slog.Logger
}

// ControlPlane is one cluster's control plane: its member of the
// federation, its source of services, VM workloads and the xDS of its
// gateways and clients, assembled in Run.
type ControlPlane struct {
	cfg      Config
	log      *slog.Logger
	guard    *connguard.Guard
	ready    chan struct{}
	election *LeaderElection // with defaults; nil without leader election

	role      atomic.Int32 // roleStarting, roleStandby or roleLeader
	elector   atomic.Pointer[leaderelection.LeaderElector]
	published atomic.Bool // the source delivered its first set of services

	// Set in Run before ready is closed.
	member    *member.Member
	routing   *routing.Routing
	workloads *workloads.Server
	files     *file.Source // nil unless services come from ConfigDir
	imports   importSources
}

// New checks cfg; it does no I/O.
func New(cfg Config) (*ControlPlane, error) {
	if err := registry.ValidClusterName(cfg.Cluster); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if cfg.Network == "" || cfg.DataDir == "" {
		return nil, errors.New("controlplane: a network and a data directory are required")
	}
	if cfg.Source == nil && cfg.Kube == nil && cfg.ConfigDir == "" {
		return nil, errors.New("controlplane: services need a config directory or a Kubernetes cluster")
	}
	if _, err := parseGateway(cfg.Gateway, cfg.Network, cfg.Locality); err != nil {
		return nil, err
	}
	if cfg.IstioWrite && cfg.Kube == nil {
		return nil, errors.New("controlplane: writing Istio resources for istiod needs a Kubernetes cluster (--kubeconfig or --in-cluster)")
	}
	var election *LeaderElection
	if cfg.LeaderElection != nil {
		if cfg.Kube == nil {
			return nil, errors.New("controlplane: leader election keeps a Lease in a Kubernetes cluster: add --kubeconfig or --in-cluster")
		}
		le, err := cfg.LeaderElection.withDefaults()
		if err != nil {
			return nil, err
		}
		election = &le
	}
	if err := registry.CheckImports(cfg.Imports); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if cfg.ImportServiceImports && cfg.Kube == nil {
		return nil, errors.New("controlplane: importing what ServiceImports name needs a Kubernetes cluster (--kubeconfig or --in-cluster)")
	}
	if cfg.ImportIstio && cfg.Kube == nil {
		return nil, errors.New("controlplane: importing what Istio Sidecars and exportTo name needs a Kubernetes cluster (--kubeconfig or --in-cluster); " +
			"without one, write the Sidecars in the config directory")
	}
	if len(cfg.ServingNames) > membership.MaxServingNames {
		return nil, fmt.Errorf("controlplane: %d serving names; the limit is %d", len(cfg.ServingNames), membership.MaxServingNames)
	}
	for _, n := range cfg.ServingNames {
		if err := membership.CheckServingName(n); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.GossipBind == "" {
		cfg.GossipBind = "127.0.0.1:0"
	}
	if cfg.MaxSVIDTTL <= 0 {
		cfg.MaxSVIDTTL = trust.MaxSVIDTTL
	}
	if cfg.GatewaySVIDOut == "" {
		cfg.GatewaySVIDOut = filepath.Join(cfg.DataDir, GatewayCredentialFile)
	}
	guard := connguard.New(connguard.Config{
		HandshakeTimeout: cfg.HandshakeTimeout, UnauthenticatedTimeout: cfg.UnauthenticatedTimeout, IdleTimeout: cfg.IdleTimeout,
		Keepalive: membership.ServerKeepaliveParameters(), Logger: cfg.Logger,
	})
	cp := &ControlPlane{cfg: cfg, log: cfg.Logger, guard: guard, ready: make(chan struct{}), election: election}
	cp.imports.init(cfg)
	return cp, nil
}

// Ready is closed once the control plane serves its last-known state.
func (c *ControlPlane) Ready() <-chan struct{} { return c.ready }

// Member is the control plane's member of the federation; valid once Ready.
func (c *ControlPlane) Member() *member.Member { return c.member }

// Routing keeps the gateways' and clients' xDS; valid once Ready.
func (c *ControlPlane) Routing() *routing.Routing { return c.routing }

// Workloads serves the VM agents; valid once Ready.
func (c *ControlPlane) Workloads() *workloads.Server { return c.workloads }

// Collector exposes the control plane's metrics; it reports nothing before
// the control plane is Ready.
func (c *ControlPlane) Collector() prometheus.Collector { return collector{c} }

type collector struct{ c *ControlPlane }

func (l collector) Describe(ch chan<- *prometheus.Desc) {
	member.Describe(ch)
	l.c.guard.Describe(ch)
	ch <- descLeader
}

func (l collector) Collect(ch chan<- prometheus.Metric) {
	l.c.guard.Collect(ch)
	collectLeader(l.c, ch)
	select {
	case <-l.c.ready:
		l.c.member.Collector().Collect(ch)
	default:
	}
}

// Run assembles the control plane and runs it until ctx is done or a part
// fails; every goroutine it starts has returned when it does. With leader
// election it first stands by until this replica holds the Lease, and
// returns ErrLostLease if it loses it.
func (c *ControlPlane) Run(ctx context.Context) error {
	if c.election != nil {
		return c.runElected(ctx)
	}
	c.role.Store(roleLeader)
	return c.run(ctx)
}

// run assembles the control plane and runs it until ctx is done or a part
// fails.
func (c *ControlPlane) run(ctx context.Context) error {
	cfg := c.cfg
	if cfg.Kube != nil {
		if err := cfg.Kube.prepare(ctx, cfg.DataDir, &cfg.Gateway, c.log); err != nil {
			return err
		}
	}
	gateways, err := parseGateway(cfg.Gateway, cfg.Network, cfg.Locality)
	if err != nil {
		return err
	}
	ms, err := membership.LoadMembership(cfg.DataDir)
	if err != nil {
		return err
	}
	if ms.Cluster != cfg.Cluster {
		return fmt.Errorf("controlplane: %s was joined as cluster %q, not %q", cfg.DataDir, ms.Cluster, cfg.Cluster)
	}
	st, err := store.Open(filepath.Join(cfg.DataDir, StoreFile))
	if err != nil {
		return err
	}
	defer st.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	td := cfg.TrustDomain
	if td == "" {
		td = registry.DefaultTrustDomain(cfg.Cluster, ms.Mesh)
	}
	own, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return fmt.Errorf("controlplane: trust domain %q: %w", td, err)
	}
	if cfg.Kube != nil && cfg.PluginCADir == "" {
		if err := cfg.Kube.shareCA(ctx, st, own); err != nil {
			return err
		}
	}
	xdsServer := xds.NewServer(ctx, c.log, xds.WithAuthorizer(authorizeXDS(own)))
	var services grpcServices
	var importDir *file.ImportDir
	if cfg.ConfigDir != "" {
		importDir = file.NewImportDir(cfg.ConfigDir, c.log)
	}
	saved, err := workloads.LoadSaved(st, cfg.VMGrace, time.Now())
	if err != nil {
		return err
	}
	c.setSourceImportsBeforeStart(func(s *importSources) { s.agents = saved.Imports() })
	if err := c.loadImports(ctx, importDir); err != nil {
		return err
	}
	m, err := c.newMember(ms, st, &services)
	if err != nil {
		return err
	}
	source, err := c.newSource(ctx, m, st)
	if err != nil {
		return err
	}
	c.files, _ = source.(*file.Source)
	c.routing, err = routing.New(routing.Config{
		View: m, Server: xdsServer, Network: cfg.Network, ConfigDir: cfg.ConfigDir, Logger: c.log,
		Probe: cfg.Probe, RulesInterval: cfg.RulesInterval,
		Internal: func() map[sni.Component]string {
			return map[sni.Component]string{
				sni.ControlPlane: internalAddr(m.Addr(), cfg.InternalHost),
				sni.Gossip:       internalAddr(m.GossipListenAddr(), cfg.InternalHost),
			}
		},
	})
	if err != nil {
		return err
	}
	info := &registry.ClusterInfo{Network: cfg.Network, Locality: cfg.Locality, Gateways: gateways}
	wcfg := workloads.Config{
		Federation: m, Store: st, ConfigDir: cfg.ConfigDir, Grace: cfg.VMGrace, SVIDTTL: cfg.VMSVIDTTL,
		Saved: saved, Logger: c.log, Policy: c.routing.AgentPolicy, Info: info,
	}
	ks, onKube := source.(*kubeSource)
	if onKube {
		// VMs join the cluster's Services and ServiceEntries.
		wcfg.Selectors = ks.source.WorkloadSelectors
	}
	c.workloads, err = workloads.New(wcfg)
	if err != nil {
		return err
	}
	services.set(xdsServer.Register, c.workloads.Register)
	c.member = m

	g.Go(func() error { return m.Run(ctx) })
	select {
	case <-m.Ready():
	case <-ctx.Done():
		return g.Wait()
	}
	if err := bootstrapGateway(m, cfg.GatewaySVIDOut, cfg.MaxSVIDTTL); err != nil {
		cancel()
		return errors.Join(err, g.Wait())
	}
	close(c.ready)
	if cfg.Kube != nil {
		g.Go(func() error { cfg.Kube.keepGatewaySecret(ctx, m, cfg.MaxSVIDTTL, c.log); return nil })
	}

	p := &publisher{member: m, workloads: c.workloads, info: info, log: c.log}
	if onKube {
		p.mirror = make(chan []workloads.EntryStatus, 1)
		g.Go(func() error {
			ks.mirrorWorkloads(ctx, p.mirror, cmp.Or(cfg.VMGrace, workloads.DefaultGrace))
			return nil
		})
	}
	g.Go(func() error {
		return source.Run(ctx, func(s []*registry.Service) {
			p.publish(ctx, s)
			c.published.Store(true)
		})
	})
	g.Go(func() error {
		return c.workloads.Run(ctx, func(s []*registry.Service) {
			p.publish(ctx, s)
			c.setAgentImports(ctx, c.workloads.Imports())
		})
	})
	if importDir != nil {
		g.Go(func() error { c.followImportFile(ctx, importDir); return nil })
	}
	g.Go(func() error { return c.routing.Run(ctx) })
	if cfg.IstioWrite {
		g.Go(func() error { return c.runIstiod(ctx, m) })
	}
	c.log.Info("control plane running", "cluster", cfg.Cluster, "api", m.Addr(), "gossip", m.GossipAddr())
	return g.Wait()
}

func (c *ControlPlane) newMember(ms *membership.Membership, st *store.Store, services *grpcServices) (*member.Member, error) {
	cfg := c.cfg
	// Behind a gateway, peers reach the API and gossip at the gateway's
	// address, by internal server names.
	advertise := cfg.Advertise
	if advertise == "" {
		advertise = cfg.Gateway
	}
	return member.New(member.Config{
		Mesh: ms.Mesh, Cluster: cfg.Cluster, Hub: ms.Hub, CA: ms.CA, Credential: ms.Credential,
		CredentialPath: filepath.Join(cfg.DataDir, membership.CredentialFile), Store: st,
		Listen: cfg.Listen, Advertise: advertise,
		Gossip: gossip.Config{
			Bind: cfg.GossipBind, Advertise: advertise, Seeds: append(ms.GossipSeeds, cfg.GossipSeeds...), Label: ms.Mesh,
			Profile: cfg.GossipProfile, RejoinInterval: cfg.GossipRejoin, Logger: c.log,
		},
		Timers: cfg.Timers, Logger: c.log,
		TrustDomain: cfg.TrustDomain, PluginCADir: cfg.PluginCADir, MaxSVIDTTL: cfg.MaxSVIDTTL, BundleRefreshHint: cfg.BundleRefresh,
		RegisterServices: services.register, ServingNames: cfg.ServingNames, NewIncarnation: c.election != nil,
		Imports:        c.imports.scope(),
		ServerOptions:  c.guard.ServerOptions,
		PolicyWarnings: func() []*hubpb.PolicyWarning { return append(c.routing.PolicyWarnings(), c.notExported()...) },
	})
}

func (c *ControlPlane) newSource(ctx context.Context, m *member.Member, st *store.Store) (Source, error) {
	cfg := c.cfg
	switch {
	case cfg.Source != nil:
		return cfg.Source, nil
	case cfg.Kube != nil:
		var on kubeImports
		if cfg.ImportServiceImports {
			on.requested = func(hosts []string) { c.setKubeImports(ctx, hosts) }
		}
		if cfg.ImportIstio {
			on.istio = func(hosts []string) { c.setIstioImports(ctx, hosts) }
		}
		return cfg.Kube.newSource(cfg, m, st, on)
	}
	td := cfg.TrustDomain
	if td == "" {
		td = registry.DefaultTrustDomain(cfg.Cluster, m.Mesh())
	}
	return file.New(file.Config{Dir: cfg.ConfigDir, Network: cfg.Network, Locality: cfg.Locality, TrustDomain: td, Interval: cfg.ConfigInterval, Logger: c.log}), nil
}

// notExported reports the config directory's ServiceEntries without a
// ServiceExport (and ServiceExports without a ServiceEntry) in the status,
// so that an Istio-valid file that exports nothing is never silent.
func (c *ControlPlane) notExported() []*hubpb.PolicyWarning {
	if c.files == nil {
		return nil
	}
	var out []*hubpb.PolicyWarning
	for _, n := range c.files.NotExported() {
		reason, _, _ := strings.Cut(n.Reason, ":\n")
		out = append(out, &hubpb.PolicyWarning{
			Host: n.Host, Field: n.Ref,
			Message: fmt.Sprintf("not exported: %s (%s line %d)", reason, n.File, n.Line),
		})
	}
	return out
}

// grpcServices are the services the member's gRPC server carries besides
// its own, set before the member runs.
type grpcServices struct{ fns []func(*grpc.Server) }

func (s *grpcServices) set(fns ...func(*grpc.Server)) { s.fns = fns }

func (s *grpcServices) register(g *grpc.Server) {
	for _, f := range s.fns {
		f(g)
	}
}

// publisher merges the source's services with the VM agents' entries and
// publishes the result; the file source and the agents both change it.
type publisher struct {
	member    *member.Member
	workloads *workloads.Server
	info      *registry.ClusterInfo
	mirror    chan []workloads.EntryStatus // the VMs' entries, for the Kubernetes API; may be nil
	log       *slog.Logger

	mu sync.Mutex // serializes publish
}

func (p *publisher) publish(ctx context.Context, services []*registry.Service) {
	p.mu.Lock()
	defer p.mu.Unlock()
	services = p.workloads.Merge(services)
	if p.mirror != nil {
		select { // the newest set replaces one not yet mirrored
		case <-p.mirror:
		default:
		}
		p.mirror <- p.workloads.Entries()
	}
	uctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Routing rebuilds the gateways' configuration on the change.
	if err := p.member.Update(uctx, p.info, services); err != nil && ctx.Err() == nil {
		p.log.Error("publish local services", "err", err)
	}
}

// internalAddr is where the gateway reaches a local listener at addr.
func internalAddr(addr, host string) string {
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" {
		host = h
		if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
		}
	}
	return net.JoinHostPort(host, port)
}

// parseGateway reads a gateway address, host:port; empty means none.
func parseGateway(addr, network string, locality *registry.Locality) ([]*registry.Gateway, error) {
	if addr == "" {
		return nil, nil
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("controlplane: gateway %q: want host:port", addr)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("controlplane: gateway %q: bad port", addr)
	}
	return []*registry.Gateway{{Address: host, Port: uint32(port), Network: network, Locality: locality}}, nil
}

// bootstrapGateway writes a first SVID for the gateway unless a valid one
// is there; from then on the gateway renews it with the SVID itself.
func bootstrapGateway(m *member.Member, path string, ttl time.Duration) error {
	if c, err := trust.LoadCredential(path); err == nil && time.Now().Before(trust.RenewAt(c.Leaf())) {
		return nil
	}
	td := m.Authority().TrustDomain()
	cred, err := m.Authority().IssueCredential(spiffeid.RequireFromPath(td, GatewayPath), ttl)
	if err != nil {
		return err
	}
	if err := cred.Save(path); err != nil {
		return fmt.Errorf("controlplane: write the gateway credential: %w", err)
	}
	return nil
}

// authorizeXDS lets this cluster's east-west gateway identity read the
// gateways' configuration, and workloads (an /ns/<namespace>/ ID of any
// federated trust domain, verified by the TLS handshake) read the
// clients'. Control planes, the hub and the admin get neither.
func authorizeXDS(own spiffeid.TrustDomain) xds.Authorizer {
	gateway := spiffeid.RequireFromPath(own, GatewayPath)
	return func(caller spiffeid.ID, node string) error {
		if strings.HasPrefix(node, xds.ClientNodePrefix) {
			if trust.NamespaceOf(caller) == "" {
				return fmt.Errorf("%s is not a workload: node %q needs a workload SVID", caller, node)
			}
			return nil
		}
		if caller != gateway {
			return fmt.Errorf("%s may not read the gateway configuration of node %q: only %s may", caller, node, gateway)
		}
		return nil
	}
}
