package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/federate/federate/internal/proxyless"
)

// runLabGRPCApp runs one instance of the lab's gRPC service; 'lab verify'
// starts them.
func runLabGRPCApp(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("lab grpc-app", "lab grpc-app --listen ADDR --svid-dir DIR",
		"Runs one instance of the embedded lab's gRPC service: the gRPC health service\n"+
			"over mTLS with the SVID files 'federate-agent svid' keeps in DIR, requiring a\n"+
			"client SVID of a federated trust domain. 'federate lab verify' starts them.", stdout)
	var listen, svidDir string
	fs.StringVar(&listen, "listen", "", "address to serve on")
	fs.StringVar(&svidDir, "svid-dir", "", "directory of svid.pem and bundle.pem")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "listen", "svid-dir"); err != nil {
		return err
	}
	return proxyless.Serve(ctx, listen, svidDir)
}

// runLabGRPCCaller runs the lab's proxyless gRPC caller, the recipe of
// docs/proxyless-grpc.md; 'lab verify' starts it.
func runLabGRPCCaller(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("lab grpc-caller", "lab grpc-caller --target HOST:PORT[,HOST:PORT...] --out FILE",
		"Calls the gRPC health service of each target over xds:/// continuously, as\n"+
			"docs/proxyless-grpc.md describes (GRPC_XDS_BOOTSTRAP, xDS credentials), and\n"+
			"appends every RPC to FILE as a JSON line. 'federate lab verify' starts it.", stdout)
	var targets, out string
	var interval time.Duration
	fs.StringVar(&targets, "target", "", "comma-separated host:port of federated gRPC services")
	fs.StringVar(&out, "out", "", "file to append the results to")
	fs.DurationVar(&interval, "interval", 20*time.Millisecond, "pause between rounds of calls")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "target", "out"); err != nil {
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
	c := &proxyless.Caller{Targets: strings.Split(targets, ","), Interval: interval, Timeout: time.Second, Out: f}
	return c.Run(ctx)
}
