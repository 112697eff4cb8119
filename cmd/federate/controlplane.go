package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/workloads"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/trust"
)

func runControlPlane(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("controlplane", "controlplane --cluster NAME --network NET --locality R/Z[/S] --data-dir DIR (--config-dir DIR | --kubeconfig F | --in-cluster) [flags]",
		"Runs a cluster's control plane: it publishes the services the cluster exports,\n"+
			"learns every other cluster's, keeps them in DIR/"+controlplane.StoreFile+" and serves them at\n"+
			"once after a restart. DIR must hold what 'federate join' wrote. Services come\n"+
			"from the YAML files in the config directory (Istio ServiceEntry and\n"+
			"WorkloadEntry; only entries with a ServiceExport (multicluster.x-k8s.io/v1alpha1)\n"+
			"of the same name and namespace leave the cluster).\n\n"+
			"Example:\n"+
			"  federate controlplane --cluster east --network net-east --locality us-east/us-east-1a \\\n"+
			"      --data-dir /var/lib/federate --config-dir /etc/federate/services --gateway 198.51.100.1:15443", stdout)
	var cluster, network, localityStr, dataDir, configDir, listen, advertise, gossipBind, gossipProfile, gateway string
	var trustDomain, cacerts, gatewayCred, internalHost, servingNames string
	var istioWrite bool
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
	fs.StringVar(&listen, "listen", controlplane.DefaultListen, "address of this control plane's federation API (peer fetch, status)")
	fs.StringVar(&advertise, "advertise", "", "address peers dial for the federation API and gossip (default: --gateway, else the listen address)")
	fs.StringVar(&gossipBind, "gossip", controlplane.DefaultGossip, "gossip address (mTLS over TCP)")
	fs.StringVar(&gossipProfile, "gossip-profile", "wan", "gossip timing: wan, or lan for faster failure detection on one network")
	fs.StringVar(&gateway, "gateway", "", "this cluster's east-west gateway address host:port, announced to the others; peers reach this control plane's API and gossip through it")
	fs.StringVar(&internalHost, "internal-host", "", "host the gateway dials to reach this control plane (default: the listen host, or 127.0.0.1 when that is 0.0.0.0)")
	fs.StringVar(&servingNames, "serving-name", "", "comma-separated DNS names and IP addresses this control plane's certificate carries besides\n"+
		"controlplane.<cluster>.federate.internal, for proxyless gRPC applications that dial it by them\n"+
		"(the hub grants them at the credential's next renewal, which starts at once)")
	fs.BoolVar(&istioWrite, "istio-write", false, "with --kubeconfig or --in-cluster: write ServiceEntries, WorkloadEntries and gateway Services\n"+
		"so that the cluster's unmodified istiod sends its sidecars to the other clusters' services\n"+
		"through their federate gateways (docs/istio.md)")
	fs.StringVar(&trustDomain, "trust-domain", "", "this cluster's SPIFFE trust domain (default <cluster>.<mesh>; must match its join token)")
	fs.StringVar(&cacerts, "cacerts", "", "directory of Istio plug-in CA files (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem); default: a generated root kept in the store")
	fs.DurationVar(&maxSVIDTTL, "max-svid-ttl", trust.MaxSVIDTTL, "longest workload SVID lifetime; a root rotation keeps the old root this long after switching")
	fs.DurationVar(&refreshHint, "bundle-refresh-hint", trust.DefaultRefreshHint, "refresh hint published in this cluster's SPIFFE bundle")
	fs.StringVar(&gatewayCred, "gateway-credential", "", "where to write the east-west gateway's first SVID if none is valid there (default DIR/"+controlplane.GatewayCredentialFile+"); the gateway renews it itself")
	fs.DurationVar(&vmGrace, "vm-grace", workloads.DefaultGrace, "how long a disconnected VM's WorkloadEntry stays, unhealthy, before it is removed")
	fs.DurationVar(&vmSVIDTTL, "vm-svid-ttl", workloads.DefaultSVIDTTL, "lifetime of VM agents' SVIDs; agents renew at half life")
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
	if istioWrite && !kf.enabled() {
		return errors.New("--istio-write writes into a Kubernetes cluster: add --kubeconfig F or --in-cluster")
	}
	if err := timers.validate(); err != nil {
		return err
	}
	locality, err := registry.ParseLocality(localityStr)
	if err != nil {
		return fmt.Errorf("--locality: %w", err)
	}
	log, err := logs.logger(stderr)
	if err != nil {
		return err
	}
	cfg := controlplane.Config{
		Cluster: cluster, Network: network, Locality: locality, DataDir: dataDir, ConfigDir: configDir,
		Listen: listen, Advertise: advertise, GossipBind: gossipBind, GossipProfile: gossipProfile,
		Gateway: gateway, InternalHost: internalHost, Timers: timers.Timers,
		TrustDomain: trustDomain, PluginCADir: cacerts, MaxSVIDTTL: maxSVIDTTL, BundleRefresh: refreshHint,
		GatewaySVIDOut: gatewayCred, VMGrace: vmGrace, VMSVIDTTL: vmSVIDTTL, IstioWrite: istioWrite, Logger: log,
	}
	if servingNames != "" {
		cfg.ServingNames = strings.Split(servingNames, ",")
	}
	if kf.enabled() {
		if cfg.Kube, err = kf.connect(); err != nil {
			return err
		}
	}
	if cfg.LeaderElection, err = kf.leaderElection(); err != nil {
		return err
	}
	cp, err := controlplane.New(cfg)
	if err != nil {
		return err
	}
	stopMetrics, err := metrics.start(cp.Live, cp.Readiness, cp.Collector(), log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	return cp.Run(ctx)
}
