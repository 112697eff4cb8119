package workloads

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
)

// Workload defaults.
const (
	// DefaultGrace is how long a disconnected agent's entry stays,
	// unhealthy, before it is removed (Istio's PILOT_WORKLOAD_ENTRY_GRACE_PERIOD).
	DefaultGrace = 10 * time.Second
	// DefaultTokenTTL is how long a VM bootstrap token is valid.
	DefaultTokenTTL = time.Hour
	// MaxTokenTTL bounds it: the token is a bearer secret.
	MaxTokenTTL = 24 * time.Hour
	// DefaultSVIDTTL is the lifetime of a VM's SVID; the agent
	// renews it at half life with the SVID itself.
	DefaultSVIDTTL = time.Hour

	workloadTokenPrefix = "fedvm1"
	maxWorkloadToken    = 2048
	metaWorkloadKey     = "workload-token-key"
	metaGroupPrefix     = "workloadgroup/"
	tokenWorkloadPrefix = "workload/"
	// AutoRegistrationAnnotation marks an entry's group, as in Istio.
	AutoRegistrationAnnotation = "istio.io/autoRegistrationGroup"
)

// Federation is what the VM agents are served from: the control plane's
// member, serving before any agent call.
type Federation interface {
	Mesh() string
	Cluster() string
	// MeshCA is the hub CA every member credential chains to.
	MeshCA() []*x509.Certificate
	// Authority is the cluster's CA, which issues the agents' SVIDs.
	Authority() *trust.Authority
	// Bundles holds every federated trust domain's bundle.
	Bundles() *trust.BundleSet
	Summaries() []registry.Summary
	Clusters() []string
	Services(cluster string) []*registry.Service
	Changed() <-chan struct{}
}

// Config configures a control plane's VM workloads.
type Config struct {
	Federation Federation
	Store      *store.Store
	// Selectors, if set, returns by hostname how each service picks its
	// workloads, as the source last read them (the Kubernetes source's
	// Services and ServiceEntries); an entry joins the services whose
	// labels it has. Callers of Selectors do not change its maps.
	Selectors func() map[string]registry.WorkloadSelector
	// ConfigDir is the file source's directory: without Selectors, its
	// ServiceEntries' workloadSelectors decide which services an entry
	// joins.
	ConfigDir string
	// Grace is how long a disconnected entry stays (default DefaultGrace).
	Grace time.Duration
	// SVIDTTL is the lifetime of the SVIDs agents get (default DefaultSVIDTTL).
	SVIDTTL time.Duration
	// Info is the cluster's network, locality and gateways, as it
	// publishes them: entries and bootstrap tokens take theirs from it,
	// from the start (an agent may connect before the first publish).
	// Without it, they come from what the cluster last published.
	Info *registry.ClusterInfo
	// Policy returns the locality policy agents apply to an imported
	// service port (from its DestinationRule); nil means AgentPolicy.
	Policy func(host string, port uint32) locality.Policy
	// Saved are the entries the store kept (LoadSaved): those of agents
	// connected when the control plane stopped wait for them, ready.
	Saved  *Saved
	Logger *slog.Logger
	Now    func() time.Time
}

// Server serves VM agents: it trades bootstrap tokens for SVIDs, keeps
// the auto-registered WorkloadEntries of connected agents and their health,
// and merges them into the services of the cluster's slice.
type Server struct {
	agentpb.UnimplementedWorkloadsServer

	cfg        Config
	log        *slog.Logger
	changed    chan struct{} // signalled when entries change
	saveSignal chan struct{} // signalled when an entry is to be saved
	stopping   chan struct{} // closed when Run's context ends
	sel        selectorCache

	mu       sync.Mutex // guards the fields below
	entries  map[string]*workloadEntry
	services []*registry.Service // the file source's latest, before merging
	loaded   bool                // services was set at least once
	notify   chan struct{}       // closed at the next change; agents' streams wait on it
	dirty    map[string]bool     // entries to save (or delete) at the next save
	beaten   time.Time           // when the last save wrote aliveKey
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
	imports                []string // the services the agent has outbound listeners for
	probed                 bool
	healthy                bool
	healthMessage          string
	streams                int
	disconnectedAt         time.Time
	// restored: saved while its agent was connected, and that agent has
	// not reconnected since the control plane started (saved.go).
	restored bool
}

func (e *workloadEntry) ready() bool {
	return (e.streams > 0 || e.restored) && (e.healthy || !e.probed)
}

// New validates cfg and restores cfg.Saved; it does no I/O.
func New(cfg Config) (*Server, error) {
	if cfg.Federation == nil || cfg.Store == nil {
		return nil, errors.New("workloads: the federation and a store are needed")
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.SVIDTTL <= 0 {
		cfg.SVIDTTL = DefaultSVIDTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Server{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "workloads"),
		changed:    make(chan struct{}, 1),
		saveSignal: make(chan struct{}, 1),
		stopping:   make(chan struct{}),
		entries:    make(map[string]*workloadEntry),
		notify:     make(chan struct{}),
		dirty:      make(map[string]bool),
	}
	w.restore(cfg.Saved)
	return w, nil
}

// Register adds the Workloads API to the control plane's gRPC server.
func (w *Server) Register(s *grpc.Server) { agentpb.RegisterWorkloadsServer(s, w) }

// Run removes entries disconnected for longer than the grace period,
// saves the entries that changed, and calls publish after every change of
// the entries, once the file source has delivered its services. It
// returns nil when ctx is done, once the last changes are saved.
func (w *Server) Run(ctx context.Context, publish func([]*registry.Service)) error {
	tick := time.NewTicker(min(time.Second, w.cfg.Grace/4))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			// The agents' streams end now; their entries are saved as
			// connected, to wait for them after the restart.
			close(w.stopping)
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			w.save(sctx, true)
			cancel()
			return nil
		case <-tick.C:
			w.sweep()
			w.save(ctx, true)
			continue
		case <-w.saveSignal:
			w.save(ctx, false)
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
func (w *Server) sweep() {
	now := w.cfg.Now()
	w.mu.Lock()
	var removed []string
	for key, e := range w.entries {
		if e.streams == 0 && now.Sub(e.disconnectedAt) >= w.cfg.Grace {
			delete(w.entries, key)
			w.markLocked(key)
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

func (w *Server) changeLocked() {
	close(w.notify)
	w.notify = make(chan struct{})
	signal(w.changed)
}

// Merge records the source's services and returns them with every
// connected or recently disconnected entry added as an endpoint of the
// services whose workloadSelector selects it, as Istio does. An entry
// replaces a source's endpoint at its address and ports: the WorkloadEntry
// object that the Kubernetes mirror wrote for it, which serves in its
// place while the entry is unknown here (to a standby that took over, say).
func (w *Server) Merge(services []*registry.Service) []*registry.Service {
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
		var joined []*registry.Endpoint
		for _, e := range w.sortedLocked() {
			if e.namespace == svc.GetNamespace() && sel.Selects(e.labels) {
				joined = append(joined, e.endpoint(svc.GetPorts()))
			}
		}
		if len(joined) == 0 {
			out[i] = svc
			continue
		}
		c := proto.CloneOf(svc)
		c.Endpoints = slices.DeleteFunc(c.Endpoints, func(ep *registry.Endpoint) bool {
			return slices.ContainsFunc(joined, func(j *registry.Endpoint) bool {
				return j.GetAddress() == ep.GetAddress() && j.GetNetwork() == ep.GetNetwork() && maps.Equal(j.GetPorts(), ep.GetPorts())
			})
		})
		c.Endpoints = append(c.Endpoints, joined...)
		out[i] = c
	}
	return out
}

func (w *Server) sortedLocked() []*workloadEntry {
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

// EntryName is Istio's name for an auto-registered entry: <group>-<ip>,
// with the colons of an IPv6 address as dashes.
func EntryName(group, address string) string {
	return group + "-" + strings.ReplaceAll(address, ":", "-")
}

// EntryStatus is an entry as 'federate status' and tests see it.
type EntryStatus struct {
	Namespace, Name, Group, Address string
	Network, Locality               string
	Connected, Healthy              bool
	// Restored: its agent was connected when the control plane stopped,
	// and has not reconnected since it started again.
	Restored bool
	// HealthMessage says why its probe failed, if it did.
	HealthMessage       string
	Labels, Annotations map[string]string
	// Ports are the entry's ports as a WorkloadEntry names them: every
	// port name of its group's template and of the services it joins, all
	// at the sidecar's inbound listener, which forwards by the SNI.
	Ports map[string]uint32
}

// Entries returns the current entries.
func (w *Server) Entries() []EntryStatus {
	selectors := w.selectors()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []EntryStatus
	for _, e := range w.sortedLocked() {
		ports := make(map[string]uint32)
		for name := range e.appPorts {
			ports[name] = e.inboundPort
		}
		for _, svc := range w.services {
			if sel, ok := selectors[svc.GetHostname()]; ok && e.namespace == svc.GetNamespace() && sel.Selects(e.labels) {
				for _, p := range svc.GetPorts() {
					ports[p.GetName()] = e.inboundPort
				}
			}
		}
		out = append(out, EntryStatus{
			Namespace: e.namespace, Name: e.name, Group: e.group, Address: e.address,
			Network: e.network, Locality: registry.FormatLocality(e.locality),
			Connected: e.streams > 0, Healthy: e.ready(), Restored: e.restored, HealthMessage: e.healthMessage,
			Labels: maps.Clone(e.labels), Annotations: maps.Clone(e.annotations), Ports: ports,
		})
	}
	return out
}

// meshTD is the federation's own trust domain, of the hub, admin and
// cluster credentials.
func meshTD(f Federation) spiffeid.TrustDomain {
	return spiffeid.RequireTrustDomainFromString(f.Mesh())
}

// ownInfo is the cluster's own ClusterInfo: Config.Info, else what it
// last published, else nil.
func (w *Server) ownInfo() *registry.ClusterInfo {
	if w.cfg.Info != nil {
		return w.cfg.Info
	}
	f := w.cfg.Federation
	for _, s := range f.Summaries() {
		if s.Cluster == f.Cluster() {
			return s.Info
		}
	}
	return nil
}

// signal wakes the goroutine waiting on ch, unless a wake-up is pending.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
