package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

// 'federate <group> --help' lists the group's subcommands and succeeds,
// for every command that takes a subcommand.
func TestSubcommandGroupsHaveHelp(t *testing.T) {
	t.Parallel()
	for _, c := range commands() {
		subs, ok := subcommands[c.name]
		if !ok {
			continue
		}
		var out, errOut bytes.Buffer
		if err := run(context.Background(), []string{c.name, "--help"}, &out, &errOut); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s --help: err = %v, want flag.ErrHelp", c.name, err)
		}
		for _, s := range subs {
			if !strings.Contains(out.String(), "federate "+s) {
				t.Errorf("%s --help lacks %q:\n%s", c.name, s, out.String())
			}
		}
	}
	for _, name := range []string{"token", "trust", "cluster", "vm", "xds", "lab"} {
		if _, ok := subcommands[name]; !ok {
			t.Errorf("%s takes a subcommand but has no group help", name)
		}
	}
}
