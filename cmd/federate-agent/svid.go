package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/cmd/internal/cli"
)

// svidCommand is 'federate-agent svid': the SVID files of a proxyless
// gRPC application, without the sidecar.
func svidCommand() *cobra.Command {
	cfg := agent.Config{}
	var logs cli.LogFlags
	cmd := &cobra.Command{
		Use:   "svid [--config-dir DIR] [--svid-dir DIR] [flags]",
		Short: "keep a proxyless gRPC application's SVID files",
		Long: "Keeps the credential files of a proxyless gRPC application on this host, as\n" +
			"Istio's agent does for proxyless gRPC; it runs no sidecar and registers nothing.\n" +
			"DIR holds what 'federate vm configure' wrote for the application's\n" +
			"WorkloadGroup (its service account is the application's identity). The\n" +
			"agent trades the token for an SVID (or reuses the one in the state\n" +
			"directory), renews it at half its lifetime and writes, each renamed into place:\n" +
			"  svid.pem             the SVID chain and its key (mode 0600)\n" +
			"  bundle.pem           the roots of every federated trust domain, refreshed\n" +
			"                       every --bundle-refresh\n" +
			"  controlplane-ca.pem  the roots that verify the control plane\n" +
			"'federate xds bootstrap --svid-dir' writes the application's xDS bootstrap\n" +
			"over these files; grpc-go rereads them by itself. See docs/proxyless-grpc.md.",
		Args: cli.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if cfg.BundleRefresh <= 0 {
				return cli.Usagef("--bundle-refresh %v: want a positive duration", cfg.BundleRefresh)
			}
			log, err := logs.Logger(c.ErrOrStderr())
			if err != nil {
				return err
			}
			if cfg.SVIDDir == cfg.StateDir {
				return cli.Usagef("--svid-dir and --state-dir are both %s: the agent's own SVID file would be the application's", cfg.SVIDDir)
			}
			if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
				return fmt.Errorf("--state-dir: %w", err)
			}
			cfg.Logger = log
			cli.BridgeKlog(log)
			return agent.New(cfg).RunSVID(c.Context())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.ConfigDir, "config-dir", "/etc/federate", "directory of the bootstrap files 'federate vm configure' wrote")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/federate-agent", "directory where the agent keeps its SVID across restarts (svid.pem)")
	fs.StringVar(&cfg.SVIDDir, "svid-dir", agent.DefaultSVIDDir, "directory of the application's SVID files; the application must be able to read it")
	fs.DurationVar(&cfg.BundleRefresh, "bundle-refresh", agent.DefaultBundleRefresh, "how often to fetch the federated roots")
	logs.Register(cmd)
	cmd.Example = "  federate-agent svid --config-dir ./payment-client --svid-dir /var/run/federate/svid"
	return cmd
}
