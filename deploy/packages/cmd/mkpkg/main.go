// Command mkpkg builds the VM agent's .deb and .rpm ('make packages').
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/federate/federate/deploy/packages"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "mkpkg:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("mkpkg", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprint(stdout, "Usage: mkpkg --binary FILE --version V [flags]\n\n"+
			"Writes OUT/federate-agent_<version>-1_amd64.deb and\n"+
			"OUT/federate-agent-<version>-1.x86_64.rpm: the agent binary (stripped), its\n"+
			"systemd unit, its user (sysusers.d) and directories (tmpfiles.d), the\n"+
			"scripts that purge them, copyright, changelog and manual page, and the\n"+
			"configuration files in /etc/federate that upgrades keep.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var opts packages.Options
	fs.StringVar(&opts.Binary, "binary", "bin/federate-agent", "the federate-agent executable, stripped (go build -ldflags='-s -w')")
	fs.StringVar(&opts.Version, "version", "", "package version, or the output of 'git describe --tags --always --dirty'")
	fs.StringVar(&opts.FilesDir, "files", "deploy/packages/files", "directory of the unit, scripts and configuration templates")
	fs.StringVar(&opts.OutDir, "out", "dist", "output directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	paths, err := packages.Build(opts)
	if err != nil {
		return err
	}
	for _, p := range paths {
		fmt.Fprintln(stdout, p)
	}
	return nil
}
