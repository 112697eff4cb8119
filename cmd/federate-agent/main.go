// Command federate-agent joins a VM to a cluster of a federated mesh and
// runs its sidecar.
package main

import (
	"context"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/cmd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.ExitCode("federate-agent", run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cli.Execute(ctx, rootCommand(), args, stdout, stderr)
}

func rootCommand() *cobra.Command {
	cfg := agent.Config{}
	var logs cli.LogFlags
	var metricsListen string
	root := &cobra.Command{
		Use:   "federate-agent [--config-dir DIR] [flags]",
		Short: "join this VM to a cluster of a federated mesh and run its sidecar",
		Long: "Joins this VM to a cluster of a federated service mesh and runs its sidecar.\n" +
			"DIR holds what 'federate vm configure' wrote: cluster.env, mesh.yaml,\n" +
			"root-cert.pem, istio-token and hosts. The agent reaches the control plane\n" +
			"through the cluster's east-west gateway (hosts maps its name there), checks\n" +
			"it against root-cert.pem, trades the one-time token for an SVID of the\n" +
			"WorkloadGroup's service account and keeps that SVID in the state directory,\n" +
			"renewing it with itself, so restarts need no token. It registers the\n" +
			"WorkloadEntry <group>-<ip>, runs the group's readiness probe and reports\n" +
			"its health.\n\n" +
			"The sidecar (DIR/sidecar.yaml, an Istio Sidecar resource with captureMode NONE)\n" +
			"accepts mTLS on its ingress listener, checks the\n" +
			"caller's SPIFFE ID (DIR/authorization.yaml: Istio AuthorizationPolicy;\n" +
			"without it any federated identity) and forwards to the application; for\n" +
			"each egress listener (an imported service) it listens on loopback and originates mTLS with\n" +
			"Istio's SNI, directly or through the remote cluster's gateway.\n\n" +
			"'federate-agent svid' keeps a proxyless gRPC application's SVID files instead.",
		Args: cli.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if cfg.Address != "" {
				if _, err := netip.ParseAddr(cfg.Address); err != nil {
					return cli.Usagef("--address %q: want this VM's IP address, e.g. 10.0.2.7", cfg.Address)
				}
			}
			log, err := logs.Logger(c.ErrOrStderr())
			if err != nil {
				return err
			}
			return runSidecar(c.Context(), cfg, log, metricsListen)
		},
	}
	fs := root.Flags()
	fs.StringVar(&cfg.ConfigDir, "config-dir", "/etc/federate", "directory of the bootstrap files and sidecar.yaml")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/federate-agent", "directory where the agent keeps its SVID (svid.pem)")
	fs.StringVar(&cfg.Address, "address", "", "this VM's IP address (default: ISTIO_SVC_IP in cluster.env, else the address that reaches the control plane)")
	fs.StringVar(&metricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics and /healthz (200 once registered), e.g. 127.0.0.1:15020 (default: off)")
	logs.Register(root)
	_ = root.MarkFlagDirname("config-dir")
	_ = root.MarkFlagDirname("state-dir")
	root.Example = "  # as the package's systemd unit runs it: the files in /etc/federate\n" +
		"  federate-agent\n\n" +
		"  # the files 'federate vm configure -o payment-vm' wrote, without the package\n" +
		"  federate-agent --config-dir payment-vm --state-dir /var/lib/federate-agent"
	root.AddCommand(svidCommand(), cli.VersionCommand("federate-agent"))
	return root
}
