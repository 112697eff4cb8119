//go:build unix

package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/internal/lab"
	"github.com/federate/federate/internal/proxyless"
)

// The lab's own processes: 'lab up' and 'lab verify' start them, so they
// are hidden from the lab's help, but each has its own.

// labAppCommand runs one of the lab's coffee-shop apps; 'lab up' starts
// them.
func labAppCommand() *cobra.Command {
	var listen string
	var r lab.Reply
	cmd := command("app --listen ADDR --service NAME --cluster NAME --instance NAME", "run one coffee-shop app of the lab",
		"Runs one coffee-shop app of the embedded lab: an HTTP server that answers\n"+
			"every request with the service, cluster and instance that served it.\n"+
			"'federate lab up' starts one per instance, behind its federate-agent.",
		func(c *cobra.Command) error {
			if err := cli.Required(c, "listen", "service", "cluster", "instance"); err != nil {
				return err
			}
			return lab.ServeApp(c.Context(), listen, r)
		})
	cmd.Hidden = true
	fs := cmd.Flags()
	fs.StringVar(&listen, "listen", "", "address to serve on")
	fs.StringVar(&r.Service, "service", "", "the service this app is an instance of")
	fs.StringVar(&r.Cluster, "cluster", "", "the cluster it runs in")
	fs.StringVar(&r.Instance, "instance", "", "its instance name")
	return cmd
}

// labGRPCAppCommand runs one instance of the lab's gRPC service; 'lab
// verify' starts them.
func labGRPCAppCommand() *cobra.Command {
	var listen, svidDir string
	cmd := command("grpc-app --listen ADDR --svid-dir DIR", "run one instance of the lab's gRPC service",
		"Runs one instance of the embedded lab's gRPC service: the gRPC health service\n"+
			"over mTLS with the SVID files 'federate-agent svid' keeps in DIR, requiring a\n"+
			"client SVID of a federated trust domain. 'federate lab verify' starts them.",
		func(c *cobra.Command) error {
			if err := cli.Required(c, "listen", "svid-dir"); err != nil {
				return err
			}
			return proxyless.Serve(c.Context(), listen, svidDir)
		})
	cmd.Hidden = true
	cmd.Flags().StringVar(&listen, "listen", "", "address to serve on")
	cmd.Flags().StringVar(&svidDir, "svid-dir", "", "directory of svid.pem and bundle.pem")
	return cmd
}

// labGRPCCallerCommand runs the lab's proxyless gRPC caller, the recipe of
// docs/proxyless-grpc.md; 'lab verify' starts it.
func labGRPCCallerCommand() *cobra.Command {
	var targets, out string
	var interval time.Duration
	cmd := command("grpc-caller --target HOST:PORT[,HOST:PORT...] --out FILE", "call the lab's gRPC service over xds:///",
		"Calls the gRPC health service of each target over xds:/// continuously, as\n"+
			"docs/proxyless-grpc.md describes (GRPC_XDS_BOOTSTRAP, xDS credentials), and\n"+
			"appends every RPC to FILE as a JSON line. 'federate lab verify' starts it.",
		func(c *cobra.Command) error {
			if err := cli.Required(c, "target", "out"); err != nil {
				return err
			}
			if os.Getenv("GRPC_XDS_BOOTSTRAP") == "" {
				return fmt.Errorf("GRPC_XDS_BOOTSTRAP is not set: point it at the file 'federate xds bootstrap' wrote")
			}
			f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			defer f.Close()
			// A call waits out a failover, which the lab allows 3 s: the
			// next priority's first connection goes through two gateways.
			caller := &proxyless.Caller{Targets: strings.Split(targets, ","), Interval: interval, Timeout: 5 * time.Second, Out: f}
			return caller.Run(c.Context())
		})
	cmd.Hidden = true
	fs := cmd.Flags()
	fs.StringVar(&targets, "target", "", "comma-separated host:port of federated gRPC services")
	fs.StringVar(&out, "out", "", "file to append the results to")
	fs.DurationVar(&interval, "interval", 20*time.Millisecond, "pause between rounds of calls")
	return cmd
}
