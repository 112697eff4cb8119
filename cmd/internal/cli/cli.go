// Package cli holds the conventions the three binaries share, as kubectl
// has them: usage errors on stderr with exit code 2, a version command and
// build-info metric, log flags, and -o table|json|yaml.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// ExitUsage is the exit code of a command line that was wrong: an unknown
// command or flag, a missing or bad flag value, an unexpected argument.
const ExitUsage = 2

// UsageError is a mistake in the command line, not a failure of the work.
type UsageError struct {
	Command string // the command path, e.g. "federate status"
	Err     error
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a usage error; Execute fills in the command.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// Execute runs root with args, its help and data on stdout and its
// diagnostics on stderr. Flag errors, unknown commands and bad arguments
// come back as *UsageError naming the command that was run.
func Execute(ctx context.Context, root *cobra.Command, args []string, stdout, stderr io.Writer) error {
	if args == nil {
		args = []string{} // cobra reads os.Args for nil
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SilenceErrors, root.SilenceUsage = true, true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &UsageError{Command: c.CommandPath(), Err: err}
	})
	// One-letter flags keep their old long spelling: --o, --f.
	root.SetGlobalNormalizationFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		switch name {
		case "o":
			return "output"
		case "f":
			return "file"
		}
		return pflag.NormalizedName(name)
	})
	cmd, err := root.ExecuteContextC(ctx)
	var u *UsageError
	if errors.As(err, &u) && u.Command == "" && cmd != nil {
		u.Command = cmd.CommandPath()
	}
	return err
}

// ExitCode reports err on stderr as main does and returns the exit code:
// 0 for nil, ExitUsage for a usage error (with a pointer to the help), 1
// otherwise.
func ExitCode(binary string, err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "%s: %v\n", binary, err)
	var u *UsageError
	if !errors.As(err, &u) {
		return 1
	}
	if u.Command != "" {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", u.Command)
	}
	return ExitUsage
}

// NoArgs refuses positional arguments, as a usage error.
func NoArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return Usagef("unexpected argument %q", args[0])
	}
	return nil
}

// Group returns a command that only holds subcommands: run without one,
// or with one it does not know, it is a usage error naming them.
func Group(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{Use: use, Short: short, Long: long, Args: cobra.ArbitraryArgs}
	c.AddCommand(subs...)
	c.RunE = func(c *cobra.Command, args []string) error {
		var want []string
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() {
				want = append(want, "'"+c.Name()+" "+s.Name()+"'")
			}
		}
		list := strings.Join(want, ", ")
		if len(args) == 0 {
			return Usagef("want %s", list)
		}
		return Usagef("unknown subcommand %q: want %s", args[0], list)
	}
	return c
}

// Required returns a usage error naming the first of the flags that is
// empty.
func Required(c *cobra.Command, names ...string) error {
	for _, n := range names {
		if f := c.Flags().Lookup(n); f != nil && f.Value.String() == "" {
			return Usagef("--%s is required (see '%s --help')", n, c.CommandPath())
		}
	}
	return nil
}
