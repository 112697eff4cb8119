// Command federate is the federation CLI and server: the hub, the control
// plane, join tokens, status and the embedded lab.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "federate:", err)
		os.Exit(1)
	}
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"hub", "run the federation hub", runHub},
		{"token", "create join tokens (token create)", runToken},
		{"join", "admit this cluster to a federation with a one-time token", runJoin},
		{"controlplane", "run a cluster's control plane", runControlPlane},
		{"status", "show every cluster of the federation", runStatus},
		{"trust", "rotate a cluster's root (trust rotate)", runTrust},
		{"cluster", "remove a cluster from the federation (cluster remove)", runCluster},
		{"vm", "onboard VMs of an Istio WorkloadGroup (vm configure)", runVM},
		{"xds", "write a proxyless gRPC application's xDS bootstrap (xds bootstrap)", runXDS},
		{"lab", "run the embedded lab (lab up|verify|status|down)", runLab},
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return errors.New("no command given")
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			if subs, ok := subcommands[c.name]; ok && len(args) == 2 && isHelp(args[1]) {
				subcommandUsage(stdout, c, subs)
				return flag.ErrHelp
			}
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "federate joins service meshes across clusters and VMs.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: federate <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'federate <command> --help' for a command's flags.")
}

// subcommands are the usage lines of the commands that take a subcommand,
// for 'federate <command> --help'.
var subcommands = map[string][]string{
	"token":   {"token create --hub ADDR --cluster NAME [--ttl 1h]"},
	"trust":   {"trust rotate --cluster NAME --hub ADDR [--wait]"},
	"cluster": {"cluster remove NAME --hub ADDR"},
	"vm":      {"vm configure -f workloadgroup.yaml --cluster NAME -o DIR (--hub ADDR | --control-plane ADDR)"},
	"xds":     {xdsBootstrapUsage},
	"lab":     {"lab up [--dir DIR] [--clusters N] [--isolate]", "lab verify [--dir DIR]", "lab status [--dir DIR]", "lab down [--dir DIR]"},
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help" || arg == "help"
}

func subcommandUsage(w io.Writer, c command, subs []string) {
	fmt.Fprintln(w, "Usage:")
	for _, s := range subs {
		fmt.Fprintln(w, "  federate "+s)
	}
	fmt.Fprintf(w, "\n%s.\n\nRun 'federate %s <subcommand> --help' for its flags.\n", strings.ToUpper(c.summary[:1])+c.summary[1:], c.name)
}

// newFlags returns a flag set whose --help prints a usage line and every flag.
func newFlags(name, usageLine, description string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: federate %s\n\n%s\n\nFlags:\n", usageLine, description)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags and rejects positional arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// required returns an error naming the first empty flag.
func required(fs *flag.FlagSet, names ...string) error {
	for _, n := range names {
		if fs.Lookup(n).Value.String() == "" {
			return fmt.Errorf("--%s is required (see 'federate %s --help')", n, fs.Name())
		}
	}
	return nil
}
