//go:build unix

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/internal/lab"
)

const labAbout = "The embedded lab runs a hub and N clusters' control planes as local processes on\n" +
	"loopback, joins them with one-time tokens and loads the coffee-shop services."

func labCommand() *cobra.Command {
	return cli.Group("lab", "run the embedded lab (lab up|verify|status|down)", labAbout,
		labUpCommand(), labVerifyCommand(), labStatusCommand(), labDownCommand(),
		labAppCommand(), labGRPCAppCommand(), labGRPCCallerCommand(), labEtcdCommand())
}

func labDirFlag(cmd *cobra.Command, dir *string) {
	cmd.Flags().StringVar(dir, "dir", lab.DefaultDir, "lab directory")
	_ = cmd.MarkFlagDirname("dir")
}

func labUpCommand() *cobra.Command {
	var dir string
	opts := lab.Options{}
	cmd := command("up [--dir DIR] [--clusters N] [--isolate] [--ha]", "start the lab",
		labAbout+"\n'up' returns once every cluster sees every other and writes DIR/"+lab.StateFile+" with\n"+
			"every address and process. With --ha the hub runs as 3 replicas on a 3-member\n"+
			"etcd (docs/hub-ha.md) instead of one hub on its bbolt file.",
		func(c *cobra.Command) error {
			if opts.LogFormat != "text" && opts.LogFormat != "json" {
				return cli.Usagef("--log-format %q: want text or json", opts.LogFormat)
			}
			if lv := new(slog.Level); lv.UnmarshalText([]byte(opts.LogLevel)) != nil {
				return cli.Usagef("--log-level %q: want debug, info, warn or error", opts.LogLevel)
			}
			if opts.Clusters < 2 || opts.Clusters > lab.MaxClusters {
				return cli.Usagef("--clusters %d: a lab has 2 to %d clusters", opts.Clusters, lab.MaxClusters)
			}
			opts.Dir = dir
			return labUp(c, opts)
		})
	labDirFlag(cmd, &dir)
	fs := cmd.Flags()
	fs.IntVar(&opts.Clusters, "clusters", lab.DefaultClusters, "number of clusters, 2 to 50")
	fs.StringVar(&opts.LogLevel, "log-level", "info", "log level of the lab's processes: debug, info, warn or error")
	fs.StringVar(&opts.LogFormat, "log-format", "text", "log format of the lab's processes: text (logfmt) or json")
	fs.BoolVar(&opts.HA, "ha", false, "run the hub as 3 replicas on a 3-member etcd, each member a separate process with\nclient mTLS on free loopback ports; 'lab verify' then kills replicas and etcd members")
	fs.BoolVar(&opts.Isolate, "isolate", false, "run each cluster in its own network namespace, joined to a shared network\nwhere only the gateways and the hub listen (Linux only; needs root and iproute2)")
	return cmd
}

func labUp(c *cobra.Command, opts lab.Options) error {
	dir := opts.Dir
	ctx, stdout := c.Context(), c.OutOrStdout()
	self := invokedAs()
	cmd := func(args ...string) string { return lab.Command(self, args...) }
	start := time.Now()
	fmt.Fprintf(stdout, "Starting the federate lab in %s with %d clusters.\n", dir, opts.Clusters)
	opts.Out, opts.Command = stdout, self
	st, err := lab.Up(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nThe lab is up after %s. The hub's view:\n\n", time.Since(start).Round(time.Millisecond))
	if err := printLabStatus(ctx, st, stdout, &cli.Output{}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nAddresses and processes: %s\n", filepath.Join(dir, lab.StateFile))
	fmt.Fprintf(stdout, "Status again:      %s\n", cmd("lab", "status", "--dir", dir))
	fmt.Fprintf(stdout, "                   (or: %s)\n", cmd("status", "--hub", st.Hub.Addr, "--credential", st.Credential))
	fmt.Fprintf(stdout, "Play the scenario: %s\n", cmd("lab", "verify", "--dir", dir))
	fmt.Fprintf(stdout, "Stop the lab:      %s\n", cmd("lab", "down", "--dir", dir))
	return nil
}

func labVerifyCommand() *cobra.Command {
	var dir string
	cmd := command("verify [--dir DIR]", "play the coffee-shop scenario on the running lab",
		"Plays the scenario on the lab in DIR (local-first routing, failover, a dead\n"+
			"gateway, a hub outage, a frozen hub, a root rotation, a VM joining, proxyless\n"+
			"gRPC failing over) and prints a row per step. On a lab started with --ha, the\n"+
			"hub outage steps are a hub replica killed, the etcd leader killed and an etcd\n"+
			"member frozen.",
		func(c *cobra.Command) error { return labVerify(c.Context(), dir, c.OutOrStdout()) })
	labDirFlag(cmd, &dir)
	return cmd
}

func labVerify(ctx context.Context, dir string, stdout io.Writer) error {
	st, err := lab.Load(dir)
	if err != nil || !st.Running() {
		return fmt.Errorf("no running lab in %s: start one with '%s'", dir, lab.Command(invokedAs(), "lab", "up", "--dir", dir))
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
}

func labStatusCommand() *cobra.Command {
	var dir string
	var out cli.Output
	cmd := command("status [--dir DIR] [-o table|json|yaml]", "print the hub's view of the lab",
		"Prints the hub's view of the lab in DIR, as 'federate status' does.",
		func(c *cobra.Command) error {
			if err := out.Check(); err != nil {
				return err
			}
			st, err := lab.Load(dir)
			if err != nil {
				return fmt.Errorf("no lab in %s: start one with '%s'", dir, lab.Command(invokedAs(), "lab", "up", "--dir", dir))
			}
			return printLabStatus(c.Context(), st, c.OutOrStdout(), &out)
		})
	labDirFlag(cmd, &dir)
	out.Register(cmd)
	return cmd
}

func labDownCommand() *cobra.Command {
	var dir string
	cmd := command("down [--dir DIR]", "stop the lab's processes and remove its directory",
		"Stops the lab's processes and removes DIR; without a lab it says so and succeeds.",
		func(c *cobra.Command) error { return lab.Down(dir, c.OutOrStdout()) })
	labDirFlag(cmd, &dir)
	return cmd
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

func printLabStatus(ctx context.Context, st *lab.State, w io.Writer, out *cli.Output) error {
	resp, err := st.Status(ctx, "")
	if err != nil {
		return fmt.Errorf("hub status: %w", err)
	}
	return printStatus(w, out, resp)
}
