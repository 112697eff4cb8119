package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/federate/federate/agent"
)

// runSVID is 'federate-agent svid': the SVID files of a proxyless gRPC
// application, without the sidecar.
func runSVID(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("federate-agent svid", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprint(stdout, "Usage: federate-agent svid [--config-dir DIR] [--svid-dir DIR] [flags]\n\n"+
			"Keeps the credential files of a proxyless gRPC application on this host, as\n"+
			"Istio's agent does for proxyless gRPC; it runs no sidecar and registers nothing.\n"+
			"DIR holds what 'federate vm configure' wrote for the application's\n"+
			"WorkloadGroup (its service account is the application's identity). The\n"+
			"agent trades the token for an SVID (or reuses the one in the state\n"+
			"directory), renews it at half its lifetime and writes, each renamed into place:\n"+
			"  svid.pem             the SVID chain and its key (mode 0600)\n"+
			"  bundle.pem           the roots of every federated trust domain, refreshed\n"+
			"                       every --bundle-refresh\n"+
			"  controlplane-ca.pem  the roots that verify the control plane\n"+
			"'federate xds bootstrap --svid-dir' writes the application's xDS bootstrap\n"+
			"over these files; grpc-go rereads them by itself. See docs/proxyless-grpc.md.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	cfg := agent.Config{}
	var level string
	fs.StringVar(&cfg.ConfigDir, "config-dir", "/etc/federate", "directory of the bootstrap files 'federate vm configure' wrote")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/federate-agent", "directory where the agent keeps its SVID across restarts (svid.pem)")
	fs.StringVar(&cfg.SVIDDir, "svid-dir", agent.DefaultSVIDDir, "directory of the application's SVID files; the application must be able to read it")
	fs.DurationVar(&cfg.BundleRefresh, "bundle-refresh", agent.DefaultBundleRefresh, "how often to fetch the federated roots")
	fs.StringVar(&level, "log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.BundleRefresh <= 0 {
		return fmt.Errorf("--bundle-refresh %v: want a positive duration", cfg.BundleRefresh)
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	if cfg.SVIDDir == cfg.StateDir {
		return fmt.Errorf("--svid-dir and --state-dir are both %s: the agent's own SVID file would be the application's", cfg.SVIDDir)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	return agent.New(cfg).RunSVID(ctx)
}
