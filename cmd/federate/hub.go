package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/membership"
)

func hubCommand() *cobra.Command {
	var cfg hub.Config
	var timers timerFlags
	var logs cli.LogFlags
	var metrics metricsFlags
	var external externalFlag
	cmd := command("hub --listen ADDR --data-dir DIR --mesh NAME [flags]", "run the federation hub",
		"Runs the federation hub: it admits clusters with join tokens, stores every\n"+
			"cluster's slice in DIR/"+hub.StoreFile+" and relays it to the others. On first start it\n"+
			"creates the mesh CA and writes DIR/"+membership.CAFile+" and the admin credential DIR/"+hub.AdminCredFile+",\n"+
			"which 'federate token create' and 'federate status' use.",
		func(c *cobra.Command) error {
			if err := cli.Required(c, "listen", "data-dir", "mesh"); err != nil {
				return err
			}
			if err := timers.validate(); err != nil {
				return err
			}
			log, err := logs.Logger(c.ErrOrStderr())
			if err != nil {
				return err
			}
			cli.BridgeKlog(log)
			cfg.Timers, cfg.Logger, cfg.External = timers.Timers, log, external
			return runHub(c.Context(), cfg, &metrics)
		})
	cmd.Example = "  federate hub --mesh shop --data-dir /var/lib/federate-hub --listen 0.0.0.0:15012 \\\n" +
		"      --advertise 203.0.113.10:15012 --metrics-listen 0.0.0.0:15020"
	fs := cmd.Flags()
	fs.StringVar(&cfg.Listen, "listen", "", "gRPC address to listen on, e.g. 0.0.0.0:15012")
	fs.StringVar(&cfg.Advertise, "advertise", "", "address clusters dial, written into join tokens (default: the listen address)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for the store, CA and admin credential")
	fs.StringVar(&cfg.Mesh, "mesh", "", "mesh name; also the hub's SPIFFE trust domain")
	fs.StringVar(&cfg.GossipBind, "gossip", "0.0.0.0:15015", "gossip address (mTLS over TCP); keep it fixed across restarts, since members rejoin it")
	fs.StringVar(&cfg.GossipAdvertise, "gossip-advertise", "", "gossip address members dial, IP:port (default: --gossip, or --advertise's host with --gossip's port)")
	fs.StringVar(&cfg.GossipProfile, "gossip-profile", "wan", "gossip timing: wan, or lan for faster failure detection on one network")
	fs.DurationVar(&cfg.CredentialTTL, "credential-ttl", hub.DefaultCredentialTTL, "lifetime of cluster credentials; members renew at half life")
	fs.StringVar(&cfg.BundleListen, "bundle-listen", "", "serve every member's SPIFFE bundle at https://ADDR/<trust domain> (docs/spire.md)")
	fs.StringVar(&cfg.BundleProfile, "bundle-profile", hub.ProfileHTTPSSPIFFE, "bundle endpoint profile: https_spiffe (presents spiffe://<mesh>/hub) or\n"+
		"https_web (presents --bundle-cert, a web PKI certificate, so a peer such as SPIRE needs no mesh bundle first)")
	fs.StringVar(&cfg.BundleCertFile, "bundle-cert", "", "https_web: PEM certificate chain of the bundle endpoint; reread when it changes")
	fs.StringVar(&cfg.BundleKeyFile, "bundle-key", "", "https_web: PEM private key of --bundle-cert")
	fs.Var(&external, "import-trust-domain", "import an external trust domain's bundle and relay it to every member;\n"+
		"td=NAME,url=URL[,profile=https_spiffe|https_web][,endpoint-id=SPIFFE-ID][,bundle=FILE][,ca=FILE][,refresh=DURATION]\n"+
		"(bundle: the first bundle of a self-serving https_spiffe endpoint; ca: roots for https_web;\n"+
		"refresh: poll at least this often, whatever the endpoint's refresh hint); repeatable")
	timers.register(fs)
	logs.Register(cmd)
	metrics.register(fs)
	return cmd
}

func runHub(ctx context.Context, cfg hub.Config, metrics *metricsFlags) error {
	srv, err := hub.New(cfg)
	if err != nil {
		return err
	}
	stopMetrics, err := metrics.start(srv.Live, srv.Readiness, srv.Collector(), cfg.Logger)
	if err != nil {
		return err
	}
	defer stopMetrics()
	return srv.Run(ctx)
}
