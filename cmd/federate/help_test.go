package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
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
