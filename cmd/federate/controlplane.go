package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/workloads"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/trust"
)

// controlPlaneFlags are the flags of 'federate controlplane'.
type controlPlaneFlags struct {
	cluster, network, locality, dataDir, configDir, listen, advertise, gossipBind, gossipProfile, gateway string
	trustDomain, cacerts, gatewayCred, internalHost, servingNames, imports                                string
	istioWrite, importServiceImports, importIstio                                                         bool
	maxSVIDTTL, refreshHint, vmGrace, vmSVIDTTL                                                           time.Duration
	timers                                                                                                timerFlags
	logs                                                                                                  cli.LogFlags
	metrics                                                                                               metricsFlags
	kube                                                                                                  kubeFlags
}

func controlPlaneCommand() *cobra.Command {
	var f controlPlaneFlags
	cmd := command("controlplane --cluster NAME --network NET --locality R/Z[/S] --data-dir DIR (--config-dir DIR | [--kubeconfig F] [--context C] | --in-cluster) [flags]",
		"run a cluster's control plane",
		"Runs a cluster's control plane: it publishes the services the cluster exports,\n"+
			"learns every other cluster's, keeps them in DIR/"+controlplane.StoreFile+" and serves them at\n"+
			"once after a restart. DIR must hold what 'federate join' wrote. Services come\n"+
			"from the YAML files in the config directory (Istio ServiceEntry and\n"+
			"WorkloadEntry; only entries with a ServiceExport (multicluster.x-k8s.io/v1beta1)\n"+
			"of the same name and namespace leave the cluster). Without --config-dir they come\n"+
			"from the Kubernetes cluster that --kubeconfig, $KUBECONFIG or ~/.kube/config (and\n"+
			"--context) name, or with --in-cluster the Pod's own.",
		func(c *cobra.Command) error { return runControlPlane(c, &f) })
	cmd.Example = "  federate controlplane --cluster east --network net-east --locality us-east/us-east-1a \\\n" +
		"      --data-dir /var/lib/federate --config-dir /etc/federate/services --gateway 198.51.100.1:15443"
	fs := cmd.Flags()
	f.kube.register(cmd, true)
	fs.StringVar(&f.cluster, "cluster", "", "this cluster's name, as in its join token")
	fs.StringVar(&f.network, "network", "", "this cluster's network; clusters on other networks are reached through gateways")
	fs.StringVar(&f.locality, "locality", "", "this cluster's default locality, region/zone[/subzone]")
	fs.StringVar(&f.dataDir, "data-dir", "", "data directory written by 'federate join'")
	fs.StringVar(&f.configDir, "config-dir", "", "directory of service YAML files")
	fs.StringVar(&f.listen, "listen", controlplane.DefaultListen, "address of this control plane's federation API (peer fetch, status)")
	fs.StringVar(&f.advertise, "advertise", "", "address peers dial for the federation API and gossip (default: --gateway, else the listen address)")
	fs.StringVar(&f.gossipBind, "gossip", controlplane.DefaultGossip, "gossip address (mTLS over TCP)")
	fs.StringVar(&f.gossipProfile, "gossip-profile", "wan", "gossip timing: wan, or lan for faster failure detection on one network")
	fs.StringVar(&f.gateway, "gateway", "", "this cluster's east-west gateway address host:port, announced to the others; peers reach this control plane's API and gossip through it")
	fs.StringVar(&f.internalHost, "internal-host", "", "host the gateway dials to reach this control plane (default: the listen host, or 127.0.0.1 when that is 0.0.0.0)")
	fs.StringVar(&f.servingNames, "serving-name", "", "comma-separated DNS names and IP addresses this control plane's certificate carries besides\n"+
		"controlplane.<cluster>.federate.internal, for proxyless gRPC applications that dial it by them\n"+
		"(the hub grants them at the credential's next renewal, which starts at once)")
	fs.StringVar(&f.imports, "import", "", "comma-separated hostnames of the services this cluster imports, or * for every service\n"+
		"(the default): the hub then sends only those services, and every cluster's gateways and trust (docs/imports.md)")
	fs.BoolVar(&f.importServiceImports, "import-service-imports", false, "with a Kubernetes cluster: import only the services that --import and the cluster's own\n"+
		"ServiceImports (those federate does not manage) name (docs/imports.md)")
	fs.BoolVar(&f.importIstio, "import-istio", false, "with a Kubernetes cluster: import only the services that --import and the cluster's Istio\n"+
		"Sidecars (egress hosts) and its Services' and ServiceEntries' exportTo name (docs/imports.md)")
	fs.BoolVar(&f.istioWrite, "istio-write", false, "with a Kubernetes cluster: write ServiceEntries, WorkloadEntries and gateway Services\n"+
		"so that the cluster's unmodified istiod sends its sidecars to the other clusters' services\n"+
		"through their federate gateways (docs/istio.md)")
	fs.StringVar(&f.trustDomain, "trust-domain", "", "this cluster's SPIFFE trust domain (default <cluster>.<mesh>; must match its join token)")
	fs.StringVar(&f.cacerts, "cacerts", "", "directory of Istio plug-in CA files (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem); default: a generated root kept in the store")
	fs.DurationVar(&f.maxSVIDTTL, "max-svid-ttl", trust.MaxSVIDTTL, "longest workload SVID lifetime; a root rotation keeps the old root this long after switching")
	fs.DurationVar(&f.refreshHint, "bundle-refresh-hint", trust.DefaultRefreshHint, "refresh hint published in this cluster's SPIFFE bundle")
	fs.StringVar(&f.gatewayCred, "gateway-credential", "", "where to write the east-west gateway's first SVID if none is valid there (default DIR/"+controlplane.GatewayCredentialFile+"); the gateway renews it itself")
	fs.DurationVar(&f.vmGrace, "vm-grace", workloads.DefaultGrace, "how long a disconnected VM's WorkloadEntry stays, unhealthy, before it is removed; after a restart, how long the entries of the VMs connected before wait for their agents, as they were")
	fs.DurationVar(&f.vmSVIDTTL, "vm-svid-ttl", workloads.DefaultSVIDTTL, "lifetime of VM agents' SVIDs; agents renew at half life")
	f.timers.register(fs)
	f.logs.Register(cmd)
	f.metrics.register(fs)
	return cmd
}

// kubernetes reports whether services come from a Kubernetes cluster: a
// kubeconfig flag asks for one, and without --config-dir there is no other
// source.
func (f *controlPlaneFlags) kubernetes() bool { return f.kube.explicit() || f.configDir == "" }

func runControlPlane(c *cobra.Command, f *controlPlaneFlags) error {
	if err := cli.Required(c, "cluster", "network", "data-dir"); err != nil {
		return err
	}
	if f.istioWrite && f.configDir != "" && !f.kube.explicit() {
		return cli.Usagef("--istio-write writes into a Kubernetes cluster: add --kubeconfig F or --in-cluster")
	}
	if err := f.timers.validate(); err != nil {
		return err
	}
	locality, err := registry.ParseLocality(f.locality)
	if err != nil {
		return cli.Usagef("--locality: %w", err)
	}
	log, err := f.logs.Logger(c.ErrOrStderr())
	if err != nil {
		return err
	}
	cli.BridgeKlog(log)
	cfg := controlplane.Config{
		Cluster: f.cluster, Network: f.network, Locality: locality, DataDir: f.dataDir, ConfigDir: f.configDir,
		Listen: f.listen, Advertise: f.advertise, GossipBind: f.gossipBind, GossipProfile: f.gossipProfile,
		Gateway: f.gateway, InternalHost: f.internalHost, Timers: f.timers.Timers,
		TrustDomain: f.trustDomain, PluginCADir: f.cacerts, MaxSVIDTTL: f.maxSVIDTTL, BundleRefresh: f.refreshHint,
		GatewaySVIDOut: f.gatewayCred, VMGrace: f.vmGrace, VMSVIDTTL: f.vmSVIDTTL, IstioWrite: f.istioWrite, Logger: log,
	}
	if f.servingNames != "" {
		cfg.ServingNames = strings.Split(f.servingNames, ",")
	}
	if c.Flags().Changed("import") {
		if cfg.Imports, err = registry.ParseImports(f.imports); err != nil {
			return cli.Usagef("--import: %w", err)
		}
	}
	if f.importServiceImports && !f.kubernetes() {
		return cli.Usagef("--import-service-imports reads the ServiceImports of a Kubernetes cluster: add --kubeconfig F or --in-cluster")
	}
	cfg.ImportServiceImports = f.importServiceImports
	if f.importIstio && !f.kubernetes() {
		return cli.Usagef("--import-istio reads the Sidecars, Services and ServiceEntries of a Kubernetes cluster: add --kubeconfig F or --in-cluster, " +
			"or write the Sidecars in the --config-dir")
	}
	cfg.ImportIstio = f.importIstio
	if f.kubernetes() {
		if cfg.Kube, err = f.kube.connect(); err != nil {
			if errors.Is(err, errNoKubeconfig) {
				return fmt.Errorf("%w, or give --config-dir DIR for services from YAML files", err)
			}
			return err
		}
	}
	if cfg.LeaderElection, err = f.kube.leaderElection(cfg.Kube != nil); err != nil {
		return err
	}
	cp, err := controlplane.New(cfg)
	if err != nil {
		return err
	}
	stopMetrics, err := f.metrics.start(cp.Live, cp.Readiness, cp.Collector(), log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	return cp.Run(c.Context())
}
