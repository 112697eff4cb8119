package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/federate/federate/internal/lab"
)

func runLab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "up" && args[0] != "down" && args[0] != "status") {
		fmt.Fprintln(stderr, "Usage: federate lab up|down|status [--dir DIR] [--clusters N]")
		return fmt.Errorf("want 'lab up', 'lab down' or 'lab status'")
	}
	verb := args[0]
	fs := newFlags("lab "+verb, "lab "+verb+" [--dir DIR] [--clusters N]",
		"The embedded lab runs a hub and N clusters' control planes as local processes on\n"+
			"loopback, joins them with one-time tokens and loads the coffee-shop services.\n"+
			"'up' returns once every cluster sees every other and writes DIR/"+lab.StateFile+" with\n"+
			"every address and process; 'status' prints the hub's view; 'down' stops the\n"+
			"processes and removes DIR.", stdout)
	var dir, logLevel string
	var n int
	fs.StringVar(&dir, "dir", lab.DefaultDir, "lab directory")
	fs.IntVar(&n, "clusters", lab.DefaultClusters, "number of clusters (up only)")
	fs.StringVar(&logLevel, "log-level", "info", "log level of the lab's processes (up only): debug, info, warn or error")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	switch verb {
	case "down":
		return lab.Down(dir, stdout)
	case "status":
		st, err := lab.Load(dir)
		if err != nil {
			return fmt.Errorf("no lab in %s: start one with 'federate lab up --dir %s'", dir, dir)
		}
		return printLabStatus(ctx, st, stdout)
	}
	start := time.Now()
	fmt.Fprintf(stdout, "Starting the federate lab in %s with %d clusters.\n", dir, n)
	st, err := lab.Up(ctx, lab.Options{Dir: dir, Clusters: n, Out: stdout, LogLevel: logLevel})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nThe lab is up after %s. The hub's view:\n\n", time.Since(start).Round(time.Millisecond))
	if err := printLabStatus(ctx, st, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nAddresses and processes: %s\n", filepath.Join(dir, lab.StateFile))
	fmt.Fprintf(stdout, "Status again: federate status --hub %s --credential %s\n", st.Hub.Addr, st.Credential)
	fmt.Fprintf(stdout, "Stop the lab: federate lab down --dir %s\n", dir)
	return nil
}

func printLabStatus(ctx context.Context, st *lab.State, w io.Writer) error {
	resp, err := st.Status(ctx, "")
	if err != nil {
		return fmt.Errorf("hub status: %w", err)
	}
	writeStatusTable(w, resp, time.Now())
	return nil
}
