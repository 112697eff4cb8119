package routing

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/file"
)

// DefaultRulesInterval is how often the config directory is read for
// changed DestinationRules.
const DefaultRulesInterval = 2 * time.Second

// coalesceDelay gathers a burst of registry changes into one build; a
// gateway's change of state is built at once.
const coalesceDelay = 50 * time.Millisecond

// View is the control plane's view of the federation (its member), which
// must be serving before Run.
type View interface {
	Cluster() string
	Summaries() []registry.Summary
	// Services returns a cluster's services, unhealthy while it is down.
	Services(cluster string) []*registry.Service
	ClusterDown(cluster string) bool
	// Changed is closed at the next change; Touch closes it without one.
	Changed() <-chan struct{}
	Touch()
}

// Config configures what a control plane tells its gateways and
// its clients.
type Config struct {
	View View
	// Server serves the snapshots (gateways and clients are told apart by
	// node ID, see xds.ClientNodePrefix).
	Server *xds.Server
	// Network and Locality are the cluster's, its gateways' and its
	// clients'; by default those the member publishes in its ClusterInfo.
	Network  string
	Locality locality.Locality
	// Internal returns the gateway's internal names and the local
	// addresses they route to; it is called at every build.
	Internal func() map[sni.Component]string
	// ConfigDir holds DestinationRule YAML, among other kinds; empty
	// means no rules.
	ConfigDir     string
	RulesInterval time.Duration
	Probe         ProbeConfig
	Logger        *slog.Logger
}

// Routing keeps the gateways' and the clients' xDS current: a pure build
// from the registry view, the DestinationRules and the failure domains
// (gossip liveness and active probes of every remote gateway), redone on
// every change of any of them.
type Routing struct {
	cfg    Config
	log    *slog.Logger
	prober *gatewayProber

	mu       sync.Mutex // guards the fields below
	warnings []*hubpb.PolicyWarning
	clients  *xds.Clients              // the last clients' configuration served
	rules    map[string]*locality.Rule // by host, as last built
	built    uint64                    // snapshots built; the version of the next
	// reuse carries the clients' resources from one build to the next,
	// so that a change renders only the hosts it touches.
	reuse        xds.Reuse
	gatewayReuse xds.GatewayReuse
}

// New checks cfg; it does no I/O.
func New(cfg Config) (*Routing, error) {
	if cfg.View == nil || cfg.Server == nil {
		return nil, errors.New("routing: a view of the federation and an xDS server are needed")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RulesInterval <= 0 {
		cfg.RulesInterval = DefaultRulesInterval
	}
	log := cfg.Logger.With("component", "routing")
	return &Routing{cfg: cfg, log: log, prober: newGatewayProber(cfg.Probe, log)}, nil
}

// PolicyWarnings returns what status shows about locality policies and
// failure domains.
func (r *Routing) PolicyWarnings() []*hubpb.PolicyWarning {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.warnings
}

// AgentPolicy is the locality policy VM agents apply to host's port: its
// DestinationRule's, with outlier detection on since a sidecar moves to
// another target whenever a connect fails; AgentPolicy without a rule.
func (r *Routing) AgentPolicy(host string, port uint32) locality.Policy {
	r.mu.Lock()
	rule := r.rules[host]
	r.mu.Unlock()
	if rule == nil {
		return AgentPolicy()
	}
	p := rule.Policy("", port)
	p.OutlierDetection = true
	return p
}

// GatewayDown reports whether the remote gateway at addr ("host:port")
// missed its last probes.
func (r *Routing) GatewayDown(addr string) bool { return r.prober.isDown(addr) }

// Clients returns the clients' configuration last served, or nil.
func (r *Routing) Clients() *xds.Clients {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clients
}

// Run rebuilds the configuration on every change until ctx is done.
func (r *Routing) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	probed := make(chan error, 1)
	go func() { probed <- r.prober.Run(ctx) }()
	defer func() { cancel(); <-probed }()

	tick := time.NewTicker(r.cfg.RulesInterval)
	defer tick.Stop()
	coalesce := time.NewTimer(coalesceDelay)
	defer coalesce.Stop()
	var rules ruleSet
	var lastFiles []file.YAMLFile
	lastErr := "none read yet"
	changed := func(files []file.YAMLFile, err error) bool {
		return errString(err) != lastErr || !slices.EqualFunc(files, lastFiles, sameFile)
	}
	for {
		// Take the change channels before reading, so no change is missed.
		memberChanged, probeChanged := r.cfg.View.Changed(), r.prober.changes()
		reloaded := false
		if files, err := r.readRules(); changed(files, err) {
			rules = r.loadRules(files, err, rules)
			lastFiles, lastErr = files, errString(err)
			reloaded = true
		}
		if err := r.build(ctx, rules); err != nil {
			r.log.Error("routing configuration not updated", "err", err)
		}
		if reloaded {
			// VM agents' targets follow the rules too: wake what waits
			// on the view, as a change of it would.
			r.cfg.View.Touch()
		}
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				return nil
			case <-memberChanged:
				coalesce.Reset(coalesceDelay)
				select {
				case <-ctx.Done():
					return nil
				case <-coalesce.C:
				}
				waiting = false
			case <-probeChanged:
				waiting = false
			case <-tick.C:
				files, err := r.readRules()
				waiting = !changed(files, err)
			}
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ruleSet is the loaded DestinationRules.
type ruleSet struct {
	rules   []*locality.Rule // sorted by namespace/name
	loadErr string           // why the last read failed; the rules are the last good ones
	// byHost remembers ruleFor's answers, which every build asks for
	// every host of the federation, until the rules change.
	byHost map[string]*locality.Rule
}

// readRules reads the config directory's YAML files, as the file source
// does; no directory means no files.
func (r *Routing) readRules() ([]file.YAMLFile, error) {
	if r.cfg.ConfigDir == "" {
		return nil, nil
	}
	return file.ReadDir(r.cfg.ConfigDir)
}

func sameFile(a, b file.YAMLFile) bool { return a.Path == b.Path && bytes.Equal(a.Data, b.Data) }

// loadRules parses what readRules returned. It runs once per change of the
// files or of the error, and logs each problem then; on any error the
// previous rules stay in force and status says why.
func (r *Routing) loadRules(files []file.YAMLFile, readErr error, prev ruleSet) ruleSet {
	if readErr != nil {
		prev.loadErr = fmt.Sprintf("reading %s: %s; the DestinationRules loaded before stay in force", r.cfg.ConfigDir, oneLine(readErr))
		r.log.Warn("DestinationRules not loaded: the config directory does not read", "dir", r.cfg.ConfigDir, "err", readErr)
		return prev
	}
	var rules []*locality.Rule
	for _, f := range files {
		rs, err := locality.ParseDestinationRulesIn(f.Data)
		if err != nil {
			prev.loadErr = fmt.Sprintf("%s: %v; the DestinationRules loaded before stay in force", f.Path, err)
			r.log.Warn("DestinationRules not loaded", "file", f.Path, "err", err)
			return prev
		}
		rules = append(rules, rs...)
	}
	slices.SortStableFunc(rules, func(a, b *locality.Rule) int { return cmp.Compare(a.Ref(), b.Ref()) })
	if len(rules) > 0 || len(prev.rules) > 0 {
		r.log.Info("DestinationRules loaded", "rules", len(rules))
	}
	return ruleSet{rules: rules, byHost: make(map[string]*locality.Rule)}
}

// oneLine joins the lines of an error that joins several.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// ruleHost is the FQDN a rule's host names: a short name is in the rule's
// namespace, as in Istio.
func ruleHost(rule *locality.Rule) string {
	if strings.Contains(rule.Host, ".") || rule.Host == "*" {
		return rule.Host
	}
	return rule.Host + "." + rule.Namespace + ".svc.cluster.local"
}

// ruleFor returns the rule for a service host: an exact host wins over a
// wildcard, a longer wildcard over a shorter, then the first by name.
func (rs ruleSet) ruleFor(host string) *locality.Rule {
	if rule, ok := rs.byHost[host]; ok {
		return rule
	}
	best := rs.bestRule(host)
	if rs.byHost != nil {
		rs.byHost[host] = best
	}
	return best
}

func (rs ruleSet) bestRule(host string) *locality.Rule {
	var best *locality.Rule
	bestLen := -1
	for _, rule := range rs.rules {
		h := ruleHost(rule)
		n := -1
		switch {
		case h == host:
			n = len(h) + 1
		case h == "*":
			n = 0
		case strings.HasPrefix(h, "*.") && strings.HasSuffix(host, h[1:]):
			n = len(h)
		}
		if n > bestLen {
			best, bestLen = rule, n
		}
	}
	return best
}

// build renders and serves both snapshots and the warnings.
func (r *Routing) build(ctx context.Context, rules ruleSet) error {
	m := r.cfg.View
	self := m.Cluster()
	summaries := m.Summaries()
	network, loc := r.cfg.Network, r.cfg.Locality
	if info := ownInfo(summaries, self); info != nil {
		network = cmp.Or(network, info.GetNetwork())
		if loc.IsZero() {
			loc = locality.FromProto(info.GetLocality())
		}
	}
	var internal map[sni.Component]string
	if r.cfg.Internal != nil {
		internal = r.cfg.Internal()
	}
	var clusterViews []xds.ClusterView
	var gateways []string
	gatewayOf := make(map[string]string) // gateway address -> cluster
	for _, sum := range summaries {
		clusterViews = append(clusterViews, xds.ClusterView{Name: sum.Cluster, Info: sum.Info, Services: m.Services(sum.Cluster)})
		if sum.Cluster == self {
			continue
		}
		for _, gw := range sum.Info.GetGateways() {
			addr := net.JoinHostPort(gw.GetAddress(), strconv.FormatUint(uint64(cmp.Or(gw.GetPort(), locality.DefaultGatewayPort)), 10))
			gateways = append(gateways, addr)
			gatewayOf[addr] = sum.Cluster
		}
	}
	r.prober.setTargets(gateways)

	subsets := make(map[string][]xds.Subset)
	hosts := make(map[string]*locality.Rule)
	for _, v := range clusterViews {
		for _, svc := range v.Services {
			h := svc.GetHostname()
			if _, ok := hosts[h]; ok {
				continue
			}
			rule := rules.ruleFor(h)
			hosts[h] = rule
			if rule == nil {
				continue
			}
			for _, s := range rule.Spec.GetSubsets() {
				subsets[h] = append(subsets[h], xds.Subset{Name: s.GetName(), Labels: s.GetLabels()})
			}
		}
	}
	clientPolicy := func(host, subset string, port uint32) locality.Policy {
		if rule := hosts[host]; rule != nil {
			return rule.Policy(subset, port)
		}
		return locality.DefaultPolicy()
	}
	// The gateway's clusters always eject failing endpoints, so failover
	// applies there even when the rule has no outlierDetection.
	gatewayPolicy := func(host, subset string, port uint32) locality.Policy {
		if rule := hosts[host]; rule != nil {
			p := rule.Policy(subset, port)
			p.OutlierDetection = true
			return p
		}
		return xds.GatewayPolicy()
	}

	r.mu.Lock()
	r.built++
	version := strconv.FormatUint(r.built, 10)
	r.mu.Unlock()
	gw, err := xds.Build(xds.Input{
		Version: version, Network: network, Services: m.Services(self), Subsets: subsets,
		Cluster: self, Internal: internal, Locality: loc, Policy: gatewayPolicy,
		Reuse: &r.gatewayReuse,
	})
	if err != nil {
		return err
	}
	views, err := xds.BuildClientViews(xds.ClientsInput{
		Version: version, Cluster: self, Network: network, Locality: loc,
		Views: clusterViews, Subsets: subsets, Policy: clientPolicy,
		ClusterDown: m.ClusterDown,
		GatewayDown: r.prober.isDown,
		Reuse:       &r.reuse,
	}, ruleExports(hosts))
	if err != nil {
		return err
	}
	clients := views.All()
	if err := r.cfg.Server.Update(ctx, gw); err != nil {
		return err
	}
	if err := r.cfg.Server.UpdateClientViews(ctx, views); err != nil {
		return err
	}
	r.setWarnings(rules, hosts, clients, gatewayOf)
	r.mu.Lock()
	r.clients, r.rules = clients, hosts
	r.mu.Unlock()
	return nil
}

// ruleExports is where the rule of each host may be seen, for exportTo.
func ruleExports(hosts map[string]*locality.Rule) map[string]xds.Exported {
	out := make(map[string]xds.Exported)
	for h, rule := range hosts {
		if rule != nil {
			out[h] = xds.Exported{Namespace: rule.Namespace, ExportTo: rule.Spec.GetExportTo()}
		}
	}
	return out
}

// ownInfo is the ClusterInfo cluster self publishes, or nil.
func ownInfo(summaries []registry.Summary, self string) *registry.ClusterInfo {
	for _, s := range summaries {
		if s.Cluster == self {
			return s.Info
		}
	}
	return nil
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
