package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// 'federate <group> --help' lists the group's subcommands with their usage
// lines and succeeds, for every command that takes a subcommand.
func TestSubcommandGroupsHaveHelp(t *testing.T) {
	t.Parallel()
	groups := map[string]bool{}
	for _, c := range rootCommand().Commands() {
		if !c.HasAvailableSubCommands() || c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		groups[c.Name()] = true
		var out, errOut bytes.Buffer
		if err := run(context.Background(), []string{c.Name(), "--help"}, &out, &errOut); err != nil {
			t.Errorf("%s --help: %v", c.Name(), err)
		}
		for _, s := range c.Commands() {
			if !s.IsAvailableCommand() {
				continue
			}
			if !strings.Contains(out.String(), "  "+s.Name()+" ") {
				t.Errorf("%s --help lacks %q:\n%s", c.Name(), s.Name(), out.String())
			}
			var sub bytes.Buffer
			if err := run(context.Background(), []string{c.Name(), s.Name(), "--help"}, &sub, &errOut); err != nil {
				t.Errorf("%s %s --help: %v", c.Name(), s.Name(), err)
			}
			if want := "federate " + c.Name() + " " + s.Use; !strings.Contains(sub.String(), want) {
				t.Errorf("%s %s --help lacks its usage line %q:\n%s", c.Name(), s.Name(), want, sub.String())
			}
		}
	}
	for _, name := range []string{"token", "trust", "cluster", "vm", "xds", "lab"} {
		if !groups[name] {
			t.Errorf("%s takes a subcommand but has no group help", name)
		}
	}
}

// Every command a user runs by hand shows an example in its help; groups
// that only hold subcommands, the lab's commands and the built-in ones
// (help, completion, version) need none.
func TestCommandsHaveExamples(t *testing.T) {
	t.Parallel()
	skip := map[string]bool{"lab": true, "help": true, "completion": true, "version": true}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, s := range c.Commands() {
			if !s.IsAvailableCommand() || skip[s.Name()] {
				continue
			}
			if s.Example == "" && hasOwnFlags(s) {
				t.Errorf("%s --help shows no example", s.CommandPath())
			}
			walk(s)
		}
	}
	walk(rootCommand())
}

// hasOwnFlags reports whether c takes a flag besides --help: a group that
// only holds subcommands takes none.
func hasOwnFlags(c *cobra.Command) bool {
	own := false
	c.LocalFlags().VisitAll(func(f *pflag.Flag) { own = own || f.Name != "help" })
	return own
}
