package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"time"

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
	var endpoints string
	cmd := command("hub --listen ADDR --data-dir DIR --mesh NAME [flags]", "run the federation hub",
		"Runs the federation hub: it admits clusters with join tokens, stores every\n"+
			"cluster's slice in DIR/"+hub.StoreFile+" and relays it to the others. On first start it\n"+
			"creates the mesh CA and writes DIR/"+membership.CAFile+" and the admin credential DIR/"+hub.AdminCredFile+",\n"+
			"which 'federate token create' and 'federate status' use.\n\n"+
			"With --store etcd, any number of replicas share an etcd (docs/hub-ha.md) and the\n"+
			"mesh CA in --ca-file, created once with 'federate hub create-ca --mesh NAME --out FILE'.",
		func(c *cobra.Command) error {
			if err := cli.Required(c, "listen", "data-dir", "mesh"); err != nil {
				return err
			}
			// Before the data directory gets its CA: a typo leaves nothing behind.
			if _, port, err := net.SplitHostPort(cfg.Listen); err != nil || port == "" {
				return cli.Usagef("--listen %q: want [HOST]:PORT, e.g. 0.0.0.0:15012", cfg.Listen)
			}
			if cfg.Advertise != "" {
				if err := checkAddr("--advertise", cfg.Advertise, "203.0.113.10:15012"); err != nil {
					return err
				}
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
			cfg.Etcd.Endpoints = membership.HubAddrs(endpoints)
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
	fs.StringVar(&cfg.Store, "store", hub.StoreBolt, "where the hub keeps its state: bbolt (DATA-DIR/"+hub.StoreFile+", one hub) or etcd (any number of replicas; docs/hub-ha.md)")
	fs.StringVar(&endpoints, "etcd-endpoints", "", "etcd: client URLs, comma-separated, e.g. https://10.0.0.1:2379,https://10.0.0.2:2379")
	fs.StringVar(&cfg.Etcd.CertFile, "etcd-cert", "", "etcd: the hub's client certificate (PEM)")
	fs.StringVar(&cfg.Etcd.KeyFile, "etcd-key", "", "etcd: the key of --etcd-cert (PEM)")
	fs.StringVar(&cfg.Etcd.CAFile, "etcd-ca", "", "etcd: the CA of etcd's serving certificates (PEM)")
	fs.StringVar(&cfg.Etcd.Prefix, "etcd-prefix", hub.DefaultEtcdPrefix, "etcd: the key prefix of this federation")
	fs.StringVar(&cfg.CAFile, "ca-file", "", "the mesh CA, certificate and key (PEM), that every replica mounts; required with --store etcd\n"+
		"(create it once with 'federate hub create-ca')")
	timers.register(fs)
	logs.Register(cmd)
	metrics.register(fs)
	cmd.AddCommand(hubCreateCACommand(), hubAdminCredentialCommand())
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

func hubCreateCACommand() *cobra.Command {
	var mesh, out string
	cmd := command("create-ca --mesh NAME --out FILE", "create the mesh CA that hub replicas on etcd share",
		"Creates the mesh CA that hub replicas on etcd share (docs/hub-ha.md): its certificate\n"+
			"and key in one PEM file, never overwritten. Mount the file in every replica, e.g.\n"+
			"as a Kubernetes Secret, and pass it as --ca-file.",
		func(c *cobra.Command) error {
			if err := cli.Required(c, "mesh", "out"); err != nil {
				return err
			}
			fp, err := hub.CreateCAFile(mesh, out, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "created the mesh CA of %q in %s (%s)\n", mesh, out, fp)
			return nil
		})
	cmd.Flags().StringVar(&mesh, "mesh", "", "mesh name; also the hub's SPIFFE trust domain")
	cmd.Flags().StringVar(&out, "out", "", "file to create")
	cmd.Example = "  federate hub create-ca --mesh shop --out mesh-ca.pem"
	return cmd
}

func hubAdminCredentialCommand() *cobra.Command {
	var mesh, caFile, out string
	var validFor time.Duration
	cmd := command("admin-credential --mesh NAME --ca-file FILE --out DIR", "issue an operator's admin credential from the shared mesh CA file",
		"Issues an admin credential from the mesh CA file that hub replicas on etcd share\n"+
			"(docs/hub-ha.md), for an operator who cannot read a replica's --data-dir: writes\n"+
			"DIR/"+hub.AdminCredFile+" and DIR/"+membership.CAFile+". It works against every replica. It can mint\n"+
			"tokens and remove clusters: keep it as you keep a kubeconfig, and keep it short-lived.",
		func(c *cobra.Command) error {
			if err := cli.Required(c, "mesh", "ca-file", "out"); err != nil {
				return err
			}
			if validFor <= 0 {
				return cli.Usagef("--valid-for %s: give a positive duration, e.g. 24h", validFor)
			}
			expiry, err := hub.WriteAdminCredential(mesh, caFile, out, validFor, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "wrote %s (valid until %s) and %s\n",
				filepath.Join(out, hub.AdminCredFile), expiry.UTC().Format(time.RFC3339), filepath.Join(out, membership.CAFile))
			return nil
		})
	fs := cmd.Flags()
	fs.StringVar(&mesh, "mesh", "", "mesh name; also the hub's SPIFFE trust domain")
	fs.StringVar(&caFile, "ca-file", "", "the mesh CA file the replicas mount (from 'federate hub create-ca')")
	fs.StringVar(&out, "out", "", "directory to write the credential and the CA certificate to")
	fs.DurationVar(&validFor, "valid-for", 24*time.Hour, "how long the credential is valid")
	_ = cmd.MarkFlagFilename("ca-file")
	_ = cmd.MarkFlagDirname("out")
	cmd.Example = "  federate hub admin-credential --mesh shop --ca-file mesh-ca.pem --out ~/.federate --valid-for 8h\n" +
		"  federate status --hub 10.0.0.1:15012,10.0.0.2:15012 --credential ~/.federate/admin.pem"
	return cmd
}
