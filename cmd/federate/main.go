// Command federate is the federation CLI and server: the hub, the control
// plane, join tokens, status and the embedded lab.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/federate/federate/cmd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.ExitCode("federate", run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line args; help and data go to stdout, progress
// and logs to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cli.Execute(ctx, rootCommand(), args, stdout, stderr)
}

func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "federate",
		Short: "federate joins service meshes across clusters and VMs",
		Long: "federate joins service meshes across clusters and VMs.\n\n" +
			"Client commands take --hub and --credential, or $FEDERATE_HUB and $FEDERATE_CREDENTIAL.",
		Args: rootArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			c.SetOut(c.ErrOrStderr())
			_ = c.Usage()
			return cli.Usagef("no command given")
		},
	}
	root.SuggestionsMinimumDistance = 2
	root.AddCommand(
		hubCommand(),
		tokenCommand(),
		joinCommand(),
		controlPlaneCommand(),
		statusCommand(),
		trustCommand(),
		clusterCommand(),
		vmCommand(),
		xdsCommand(),
		labCommand(),
		cli.VersionCommand("federate"),
	)
	return root
}

// rootArgs refuses an unknown command, suggesting close ones.
func rootArgs(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if s := c.SuggestionsFor(args[0]); len(s) > 0 {
		return cli.Usagef("unknown command %q: did you mean %q?", args[0], s[0])
	}
	return cli.Usagef("unknown command %q", args[0])
}

// command returns a leaf command that takes no positional argument; use is
// its usage line after "federate".
func command(use, short, long string, run func(c *cobra.Command) error) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Long: long, Args: cli.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return run(c) },
	}
}
