package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/federate/federate/internal/lab"
)

func runLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "app" {
		return runLabApp(ctx, args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "grpc-app" {
		return runLabGRPCApp(ctx, args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "grpc-caller" {
		return runLabGRPCCaller(ctx, args[1:], stdout)
	}
	if len(args) == 0 || !slices.Contains([]string{"up", "verify", "down", "status"}, args[0]) {
		fmt.Fprintln(stderr, "Usage: federate lab up|verify|down|status [--dir DIR] [--clusters N]")
		return fmt.Errorf("want 'lab up', 'lab verify', 'lab down' or 'lab status'")
	}
	verb := args[0]
	fs := newFlags("lab "+verb, "lab "+verb+" [--dir DIR] [--clusters N] [--isolate]",
		"The embedded lab runs a hub and N clusters' control planes as local processes on\n"+
			"loopback, joins them with one-time tokens and loads the coffee-shop services.\n"+
			"'up' returns once every cluster sees every other and writes DIR/"+lab.StateFile+" with\n"+
			"every address and process; 'verify' plays the scenario (local-first routing,\n"+
			"failover, a dead gateway, a hub outage, a frozen hub, a root rotation, a VM joining,\n"+
			"proxyless gRPC failing over) and\n"+
			"prints a row per step; 'status' prints the hub's view; 'down' stops the\n"+
			"processes and removes DIR.", stdout)
	var dir, logLevel string
	var n int
	var isolate bool
	fs.StringVar(&dir, "dir", lab.DefaultDir, "lab directory")
	fs.IntVar(&n, "clusters", lab.DefaultClusters, "number of clusters (up only)")
	fs.StringVar(&logLevel, "log-level", "info", "log level of the lab's processes (up only): debug, info, warn or error")
	fs.BoolVar(&isolate, "isolate", false, "run each cluster in its own network namespace, joined to a shared network\nwhere only the gateways and the hub listen (up only; needs root and iproute2)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	self := invokedAs()
	cmd := func(args ...string) string { return lab.Command(self, args...) }
	switch verb {
	case "verify":
		st, err := lab.Load(dir)
		if err != nil || !st.Running() {
			return fmt.Errorf("no running lab in %s: start one with '%s'", dir, cmd("lab", "up", "--dir", dir))
		}
		fmt.Fprintf(stdout, "Playing the coffee-shop scenario on the lab in %s:\n", dir)
		start := time.Now()
		results, err := lab.Verify(ctx, st, stdout)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout)
		lab.WriteTable(stdout, results)
		fmt.Fprintln(stdout, "\n"+lab.Summary(results, time.Since(start)))
		for _, r := range results {
			if !r.OK {
				return fmt.Errorf("step %q failed: see the table above and the logs in %s", r.Step, dir)
			}
		}
		fmt.Fprintln(stdout, "Every step passed.")
		return nil
	case "down":
		return lab.Down(dir, stdout)
	case "status":
		st, err := lab.Load(dir)
		if err != nil {
			return fmt.Errorf("no lab in %s: start one with '%s'", dir, cmd("lab", "up", "--dir", dir))
		}
		return printLabStatus(ctx, st, stdout)
	}
	start := time.Now()
	fmt.Fprintf(stdout, "Starting the federate lab in %s with %d clusters.\n", dir, n)
	st, err := lab.Up(ctx, lab.Options{Dir: dir, Clusters: n, Out: stdout, LogLevel: logLevel, Isolate: isolate, Command: self})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nThe lab is up after %s. The hub's view:\n\n", time.Since(start).Round(time.Millisecond))
	if err := printLabStatus(ctx, st, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nAddresses and processes: %s\n", filepath.Join(dir, lab.StateFile))
	fmt.Fprintf(stdout, "Status again:      %s\n", cmd("lab", "status", "--dir", dir))
	fmt.Fprintf(stdout, "                   (or: %s)\n", cmd("status", "--hub", st.Hub.Addr, "--credential", st.Credential))
	fmt.Fprintf(stdout, "Play the scenario: %s\n", cmd("lab", "verify", "--dir", dir))
	fmt.Fprintf(stdout, "Stop the lab:      %s\n", cmd("lab", "down", "--dir", dir))
	return nil
}

// invokedAs is how the user ran this binary, for commands that messages
// suggest: the path they typed (bin/federate) when it has a slash, else
// the bare name, which their PATH finds.
func invokedAs() string {
	switch {
	case os.Args[0] == "":
		return "federate"
	case strings.Contains(os.Args[0], "/"):
		return os.Args[0]
	}
	return filepath.Base(os.Args[0])
}

func printLabStatus(ctx context.Context, st *lab.State, w io.Writer) error {
	resp, err := st.Status(ctx, "")
	if err != nil {
		return fmt.Errorf("hub status: %w", err)
	}
	writeStatusTable(w, resp, time.Now())
	return nil
}

// runLabApp runs one of the lab's coffee-shop apps; 'lab up' starts them.
func runLabApp(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("lab app", "lab app --listen ADDR --service NAME --cluster NAME --instance NAME",
		"Runs one coffee-shop app of the embedded lab: an HTTP server that answers\n"+
			"every request with the service, cluster and instance that served it.\n"+
			"'federate lab up' starts one per instance, behind its federate-agent.", stdout)
	var listen string
	var r lab.Reply
	fs.StringVar(&listen, "listen", "", "address to serve on")
	fs.StringVar(&r.Service, "service", "", "the service this app is an instance of")
	fs.StringVar(&r.Cluster, "cluster", "", "the cluster it runs in")
	fs.StringVar(&r.Instance, "instance", "", "its instance name")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := required(fs, "listen", "service", "cluster", "instance"); err != nil {
		return err
	}
	return lab.ServeApp(ctx, listen, r)
}
