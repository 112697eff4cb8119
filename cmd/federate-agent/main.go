// Command federate-agent joins a VM to a cluster of a federated mesh and
// runs its sidecar.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/federate/federate/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "federate-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "svid" {
		return runSVID(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("federate-agent", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprint(stdout, "Usage: federate-agent [--config-dir DIR] [flags]\n"+
			"       federate-agent svid [--config-dir DIR] [--svid-dir DIR] [flags]   (see 'federate-agent svid --help')\n\n"+
			"Joins this VM to a cluster of a federated service mesh and runs its sidecar.\n"+
			"DIR holds what 'federate vm configure' wrote: cluster.env, mesh.yaml,\n"+
			"root-cert.pem, istio-token and hosts. The agent reaches the control plane\n"+
			"through the cluster's east-west gateway (hosts maps its name there), checks\n"+
			"it against root-cert.pem, trades the one-time token for an SVID of the\n"+
			"WorkloadGroup's service account and keeps that SVID in the state directory,\n"+
			"renewing it with itself, so restarts need no token. It registers the\n"+
			"WorkloadEntry <group>-<ip>, runs the group's readiness probe and reports\n"+
			"its health.\n\n"+
			"The sidecar (DIR/sidecar.yaml, an Istio Sidecar resource with captureMode NONE)\n"+
			"accepts mTLS on its ingress listener, checks the\n"+
			"caller's SPIFFE ID (DIR/authorization.yaml: Istio AuthorizationPolicy;\n"+
			"without it any federated identity) and forwards to the application; for\n"+
			"each egress listener (an imported service) it listens on loopback and originates mTLS with\n"+
			"Istio's SNI, directly or through the remote cluster's gateway.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	cfg := agent.Config{}
	var level, metricsListen string
	fs.StringVar(&cfg.ConfigDir, "config-dir", "/etc/federate", "directory of the bootstrap files and sidecar.yaml")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/federate-agent", "directory where the agent keeps its SVID (svid.pem)")
	fs.StringVar(&cfg.Address, "address", "", "this VM's IP address (default: ISTIO_SVC_IP in cluster.env, else the address that reaches the control plane)")
	fs.StringVar(&level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&metricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics and /healthz (200 once registered), e.g. 127.0.0.1:15020 (default: off)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	var registered atomic.Bool
	cfg.Ready = func() { registered.Store(true) }
	a := agent.New(cfg)
	stopMetrics, err := serveMetrics(metricsListen, a.Collector(registered.Load), registered.Load, cfg.Logger)
	if err != nil {
		return err
	}
	defer stopMetrics()
	return a.Run(ctx)
}
