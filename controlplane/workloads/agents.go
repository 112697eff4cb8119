package workloads

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/federate/federate/agent/agentpb"
	"github.com/federate/federate/controlplane/routing"
	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/trust"
)

// Connect registers the calling agent's WorkloadEntry for the life of the
// stream, applies its health reports and sends its configuration.
func (w *Server) Connect(stream grpc.BidiStreamingServer[agentpb.AgentMessage, agentpb.AgentConfig]) error {
	ctx := stream.Context()
	m := w.cfg.Federation
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
	ns := trust.NamespaceOf(caller)
	if !caller.MemberOf(m.Authority().TrustDomain()) || ns == "" {
		return status.Errorf(codes.PermissionDenied, "%s is not a workload of trust domain %s", caller, m.Authority().TrustDomain())
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
		case <-w.stopping:
			return status.Error(codes.Unavailable, "the control plane is stopping: reconnect")
		case <-recvErr:
			return nil
		case <-wake:
		case <-viewChanged:
		}
	}
}

// connect creates or revives the entry of a registering agent.
func (w *Server) connect(g *workloadGroup, id spiffeid.ID, address string, reg *agentpb.Register) string {
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
	info := w.ownInfo()
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
	e.imports = slices.Clone(reg.GetImports())
	e.probed = reg.GetProbed()
	if e.streams == 0 && !e.restored {
		e.healthy = false // a probed entry waits for its first report
	}
	e.restored = false // its health is the agent's again
	e.streams++
	w.markLocked(key)
	w.changeLocked()
	return key
}

// Imports returns, sorted, the services the agents of the entries the
// server holds (connected, or disconnected within the grace period) have
// outbound listeners for: what the cluster must import for its VMs.
func (w *Server) Imports() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var lists [][]string
	for _, e := range w.entries {
		lists = append(lists, e.imports)
	}
	return agentImports(lists...)
}

// agentImports merges agents' import lists, sorted. A hostname only: an
// agent never widens its cluster's imports to every service.
func agentImports(lists ...[]string) []string {
	out := []string{}
	for _, l := range lists {
		for _, h := range l {
			if h != registry.ImportAll && registry.CheckImports([]string{h}) == nil {
				out = append(out, h)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (w *Server) disconnect(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.entries[key]
	if e == nil || w.isStopping() {
		return // a stopping control plane keeps it connected, for its restart
	}
	e.streams--
	if e.streams == 0 {
		e.disconnectedAt = w.cfg.Now()
		w.markLocked(key)
		w.log.Info("workload entry disconnected; unhealthy until it reconnects", "entry", key, "removed_after", w.cfg.Grace)
		w.changeLocked()
	}
}

func (w *Server) isStopping() bool {
	select {
	case <-w.stopping:
		return true
	default:
		return false
	}
}

func (w *Server) setHealth(key string, healthy bool, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.entries[key]
	if e == nil || e.healthy == healthy && e.healthMessage == msg {
		return
	}
	e.healthy, e.healthMessage = healthy, msg
	w.log.Info("workload health changed", "entry", key, "healthy", healthy, "message", msg)
	w.markLocked(key)
	w.changeLocked()
}

// agentConfig is what the agent of entry key needs: bundles, its inbound
// ports, and where its imported services are.
func (w *Server) agentConfig(key string, imports []string) *agentpb.AgentConfig {
	m := w.cfg.Federation
	w.mu.Lock()
	e := w.entries[key]
	network, entryLocality := e.network, proto.CloneOf(e.locality)
	labels, appPorts, ns := maps.Clone(e.labels), maps.Clone(e.appPorts), e.namespace
	services := w.services
	w.mu.Unlock()

	cfg := &agentpb.AgentConfig{Entry: key, Network: network, Locality: entryLocality, Bundles: w.trustBundles()}

	selectors := w.selectors()
	for _, svc := range services {
		sel, ok := selectors[svc.GetHostname()]
		if !ok || svc.GetNamespace() != ns || !sel.Selects(labels) {
			continue
		}
		for _, p := range svc.GetPorts() {
			mapped := cmp.Or(appPorts[p.GetName()], sel.TargetPorts[p.GetName()])
			cfg.Inbound = append(cfg.Inbound, &agentpb.Inbound{
				Hostname: svc.GetHostname(), Port: p.GetNumber(), TargetPort: cmp.Or(mapped, p.GetNumber()), DefaultTarget: mapped == 0,
			})
		}
	}

	infos := make(map[string]*registry.ClusterInfo)
	for _, s := range m.Summaries() {
		infos[s.Cluster] = s.Info
	}
	client := locality.Client{Locality: locality.FromProto(entryLocality), Network: network, Cluster: m.Cluster(), Labels: labels}
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
func (w *Server) targets(client locality.Client, p *registry.Port, sources []locality.Source, up *agentpb.Upstream) []*agentpb.Target {
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

// trustBundles are the roots of every federated trust domain, this
// cluster's own included, sorted by trust domain.
func (w *Server) trustBundles() []*agentpb.TrustBundle {
	m := w.cfg.Federation
	own := m.Authority().TrustDomain()
	out := []*agentpb.TrustBundle{{TrustDomain: own.String(), Roots: ders(m.Authority().Bundle().X509Authorities())}}
	for _, td := range m.Bundles().TrustDomains() {
		if td == own {
			continue
		}
		if b, err := m.Bundles().GetX509BundleForTrustDomain(td); err == nil {
			out = append(out, &agentpb.TrustBundle{TrustDomain: td.String(), Roots: ders(b.X509Authorities())})
		}
	}
	slices.SortFunc(out, func(a, b *agentpb.TrustBundle) int { return strings.Compare(a.GetTrustDomain(), b.GetTrustDomain()) })
	return out
}

// policy is the locality policy of an imported service port for agents.
func (w *Server) policy(host string, port uint32) locality.Policy {
	if w.cfg.Policy != nil {
		return w.cfg.Policy(host, port)
	}
	return routing.AgentPolicy()
}
