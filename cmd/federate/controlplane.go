package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/file"
	"github.com/federate/federate/registry/kube"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
)

// ControlPlaneStoreFile is the control plane's bbolt file in its data directory.
const ControlPlaneStoreFile = "controlplane.db"

func runControlPlane(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("controlplane", "controlplane --cluster NAME --network NET --locality R/Z[/S] --data-dir DIR (--config-dir DIR | --kubeconfig F | --in-cluster) [flags]",
		"Runs a cluster's control plane: it publishes the services the cluster exports,\n"+
			"learns every other cluster's, keeps them in DIR/"+ControlPlaneStoreFile+" and serves them at\n"+
			"once after a restart. DIR must hold what 'federate join' wrote. Services come\n"+
			"from the YAML files in the config directory (Istio ServiceEntry and\n"+
			"WorkloadEntry; only entries with 'export: true' leave the cluster).\n\n"+
			"Example:\n"+
			"  federate controlplane --cluster east --network net-east --locality us-east/us-east-1a \\\n"+
			"      --data-dir /var/lib/federate --config-dir /etc/federate/services --gateway 198.51.100.1:15443", stdout)
	var cluster, network, localityStr, dataDir, configDir, listen, advertise, gossipBind, gossipProfile, gateway string
	var trustDomain, cacerts, gatewayCred, internalHost string
	var maxSVIDTTL, refreshHint time.Duration
	var vmGrace, vmSVIDTTL time.Duration
	var timers timerFlags
	var logs logFlags
	var metrics metricsFlags
	var kf kubeFlags
	kf.register(fs, true)
	fs.StringVar(&cluster, "cluster", "", "this cluster's name, as in its join token")
	fs.StringVar(&network, "network", "", "this cluster's network; clusters on other networks are reached through gateways")
	fs.StringVar(&localityStr, "locality", "", "this cluster's default locality, region/zone[/subzone]")
	fs.StringVar(&dataDir, "data-dir", "", "data directory written by 'federate join'")
	fs.StringVar(&configDir, "config-dir", "", "directory of service YAML files")
	fs.StringVar(&listen, "listen", "0.0.0.0:15013", "address of this control plane's federation API (peer fetch, status)")
	fs.StringVar(&advertise, "advertise", "", "address peers dial for the federation API and gossip (default: --gateway, else the listen address)")
	fs.StringVar(&gossipBind, "gossip", "0.0.0.0:15014", "gossip address (mTLS over TCP)")
	fs.StringVar(&gossipProfile, "gossip-profile", "wan", "gossip timing: wan, or lan for faster failure detection on one network")
	fs.StringVar(&gateway, "gateway", "", "this cluster's east-west gateway address host:port, announced to the others; peers reach this control plane's API and gossip through it")
	fs.StringVar(&internalHost, "internal-host", "", "host the gateway dials to reach this control plane (default: the listen host, or 127.0.0.1 when that is 0.0.0.0)")
	fs.StringVar(&trustDomain, "trust-domain", "", "this cluster's SPIFFE trust domain (default <cluster>.<mesh>; must match its join token)")
	fs.StringVar(&cacerts, "cacerts", "", "directory of Istio plug-in CA files (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem); default: a generated root kept in the store")
	fs.DurationVar(&maxSVIDTTL, "max-svid-ttl", trust.MaxSVIDTTL, "longest workload SVID lifetime; a root rotation keeps the old root this long after switching")
	fs.DurationVar(&refreshHint, "bundle-refresh-hint", trust.DefaultRefreshHint, "refresh hint published in this cluster's SPIFFE bundle")
	fs.StringVar(&gatewayCred, "gateway-credential", "", "where to write the east-west gateway's first SVID if none is valid there (default DIR/"+GatewayCredentialFile+"); the gateway renews it itself")
	fs.DurationVar(&vmGrace, "vm-grace", hub.DefaultWorkloadGrace, "how long a disconnected VM's WorkloadEntry stays, unhealthy, before it is removed")
	fs.DurationVar(&vmSVIDTTL, "vm-svid-ttl", hub.DefaultWorkloadSVIDTTL, "lifetime of VM agents' SVIDs; agents renew at half life")
	timers.register(fs)
	logs.register(fs)
	metrics.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "cluster", "network", "data-dir"); err != nil {
		return err
	}
	if !kf.enabled() && configDir == "" {
		return errors.New("missing --config-dir (or --kubeconfig / --in-cluster for a Kubernetes cluster)")
	}
	if err := timers.validate(); err != nil {
		return err
	}
	if kf.enabled() {
		if err := kf.prepare(ctx, dataDir, &gateway, stderr); err != nil {
			return err
		}
	}
	locality, err := registry.ParseLocality(localityStr)
	if err != nil {
		return fmt.Errorf("--locality: %w", err)
	}
	gateways, err := parseGateway(gateway, network, locality)
	if err != nil {
		return err
	}
	log, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	ms, err := hub.LoadMembership(dataDir)
	if err != nil {
		return err
	}
	if ms.Cluster != cluster {
		return fmt.Errorf("%s was joined as cluster %q, not %q", dataDir, ms.Cluster, cluster)
	}
	st, err := store.Open(filepath.Join(dataDir, ControlPlaneStoreFile))
	if err != nil {
		return err
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gatewayConfig := xds.NewServer(ctx, log)
	var workloads *hub.Workloads // VM agents; set once the member exists
	var routing *hub.Routing     // the gateways' and clients' xDS; set before the member runs
	// Behind a gateway, peers reach the API and gossip at the gateway's
	// address, by internal server names.
	apiAdvertise, gossipAdvertise := advertise, advertise
	if advertise == "" {
		apiAdvertise, gossipAdvertise = gateway, gateway
	}
	member, err := hub.NewMember(hub.MemberConfig{
		Mesh: ms.Mesh, Cluster: cluster, Hub: ms.Hub, CA: ms.CA, Credential: ms.Credential,
		CredentialPath: filepath.Join(dataDir, hub.CredentialFile), Store: st,
		Listen: listen, Advertise: apiAdvertise,
		Gossip: hub.GossipConfig{Bind: gossipBind, Advertise: gossipAdvertise, Seeds: ms.GossipSeeds, Label: ms.Mesh, Profile: gossipProfile, Logger: log},
		Timers: timers.Timers, Logger: log,
		TrustDomain: trustDomain, PluginCADir: cacerts, MaxSVIDTTL: maxSVIDTTL, BundleRefreshHint: refreshHint,
		RegisterServices: func(s *grpc.Server) {
			gatewayConfig.Register(s)
			workloads.Register(s)
		},
		PolicyWarnings: func() []*hubpb.PolicyWarning { return routing.PolicyWarnings() },
	})
	if err != nil {
		return err
	}
	if trustDomain == "" {
		trustDomain = registry.DefaultTrustDomain(cluster, ms.Mesh)
	}
	info := &registry.ClusterInfo{Network: network, Locality: locality, Gateways: gateways}
	var source interface {
		Run(context.Context, func([]*registry.Service)) error
	} = file.New(file.Config{Dir: configDir, Network: network, Locality: locality, TrustDomain: trustDomain, Logger: log})
	if kf.enabled() {
		cfg := kube.Config{Cluster: cluster, Network: network, Locality: locality, TrustDomain: trustDomain, Logger: log}
		if source, err = kf.newSource(cfg, member, filepath.Join(dataDir, hub.CredentialFile)); err != nil {
			return err
		}
	}
	// DestinationRules come from the config directory too.
	routing, err = hub.NewRouting(hub.RoutingConfig{
		Member: member, Server: gatewayConfig, Network: network, ConfigDir: configDir, Logger: log,
		Internal: func() map[sni.Component]string {
			return map[sni.Component]string{
				sni.ControlPlane: internalAddr(member.Addr(), internalHost),
				sni.Gossip:       internalAddr(member.GossipListenAddr(), internalHost),
			}
		},
	})
	if err != nil {
		return err
	}
	workloads, err = hub.NewWorkloads(hub.WorkloadsConfig{Member: member, Store: st, ConfigDir: configDir, Grace: vmGrace, SVIDTTL: vmSVIDTTL, Logger: log,
		Policy: routing.AgentPolicy})
	if err != nil {
		return err
	}

	stopMetrics, err := metrics.start(member.Ready(), member.Collector(), log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	errc := make(chan error, 4)
	go func() { errc <- member.Run(ctx) }()
	select {
	case <-member.Ready():
	case err := <-errc:
		return err
	}
	// On Kubernetes, connected VMs get WorkloadEntries in the cluster's API.
	vmEntries := make(chan []hub.EntryStatus, 1)
	if ks, ok := source.(*kubeSource); ok {
		go ks.mirrorWorkloads(ctx, vmEntries)
	}
	// The file source and the VM agents' entries both change the slice.
	var publishMu sync.Mutex
	publish := func(services []*registry.Service) {
		publishMu.Lock()
		defer publishMu.Unlock()
		services = workloads.Merge(services)
		select { // the newest set replaces one not yet mirrored
		case <-vmEntries:
		default:
		}
		vmEntries <- connected(workloads.Entries())
		uctx, ucancel := context.WithTimeout(ctx, 30*time.Second)
		defer ucancel()
		// Routing rebuilds the gateways' configuration on the change.
		if err := member.Update(uctx, info, services); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("publish local services", "err", err)
		}
	}
	go func() { errc <- source.Run(ctx, publish) }()
	go func() { errc <- workloads.Run(ctx, publish) }()
	go func() { errc <- routing.Run(ctx) }()
	if gatewayCred == "" {
		gatewayCred = filepath.Join(dataDir, GatewayCredentialFile)
	}
	if err := bootstrapGateway(member, gatewayCred, maxSVIDTTL); err != nil {
		return err
	}
	log.Info("control plane running", "cluster", cluster, "api", member.Addr(), "gossip", member.GossipAddr())
	var runErr error
	for range 4 {
		if err := <-errc; err != nil && runErr == nil {
			runErr = err
			cancel()
		}
		cancel()
	}
	return runErr
}

// connected keeps the entries whose agents are connected now.
func connected(entries []hub.EntryStatus) []hub.EntryStatus {
	var out []hub.EntryStatus
	for _, e := range entries {
		if e.Connected {
			out = append(out, e)
		}
	}
	return out
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

func parseGateway(addr, network string, locality *registry.Locality) ([]*registry.Gateway, error) {
	if addr == "" {
		return nil, nil
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--gateway %q: want host:port", addr)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("--gateway %q: bad port", addr)
	}
	return []*registry.Gateway{{Address: host, Port: uint32(port), Network: network, Locality: locality}}, nil
}

// GatewayCredentialFile is the east-west gateway's SVID in the control
// plane's data directory.
const GatewayCredentialFile = "gateway.pem"

// GatewayPath is the gateway's SPIFFE ID path, as in Istio.
const GatewayPath = "/ns/istio-system/sa/eastwest-gateway"

// bootstrapGateway writes a first SVID for the gateway unless a valid one
// is there; from then on the gateway renews it with the SVID itself.
func bootstrapGateway(member *hub.Member, path string, ttl time.Duration) error {
	if c, err := trust.LoadCredential(path); err == nil && time.Now().Before(trust.RenewAt(c.Leaf())) {
		return nil
	}
	td := member.Authority().TrustDomain()
	cred, err := member.Authority().IssueCredential(spiffeid.RequireFromPath(td, GatewayPath), ttl)
	if err != nil {
		return err
	}
	if err := cred.Save(path); err != nil {
		return fmt.Errorf("write gateway credential: %w", err)
	}
	return nil
}
