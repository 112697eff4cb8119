package cli

import (
	"fmt"
	"io"
	"runtime/debug"
	"text/tabwriter"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// version and commit may be set at link time, for builds without module
// or VCS information:
//
//	-ldflags '-X github.com/federate/federate/cmd/internal/cli.version=v1.2.3'
var version, commit string

// Info says what a binary was built from.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
}

// BuildInfo reads the module version, VCS revision and Go version that
// the Go toolchain recorded in the binary.
func BuildInfo() Info {
	i := Info{Version: version, Commit: commit}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return i.orUnknown()
	}
	i.GoVersion = bi.GoVersion
	if i.Version == "" {
		i.Version = bi.Main.Version
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if i.Commit == "" {
				i.Commit = s.Value
			}
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && i.Commit != "" && i.Commit != commit {
		i.Commit += "-dirty"
	}
	return i.orUnknown()
}

func (i Info) orUnknown() Info {
	for _, s := range []*string{&i.Version, &i.Commit, &i.GoVersion} {
		if *s == "" {
			*s = "unknown"
		}
	}
	return i
}

// VersionCommand is 'BINARY version [-o table|json|yaml]'.
func VersionCommand(binary string) *cobra.Command {
	var out Output
	c := &cobra.Command{
		Use:   "version",
		Short: "print the version, commit and Go version of " + binary,
		Long: "Prints the version, VCS commit and Go version " + binary + " was built from, as the Go\n" +
			"toolchain recorded them (runtime/debug build info). The federate_build_info\n" +
			"metric carries the same values.",
		Args: NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := out.Check(); err != nil {
				return err
			}
			i := BuildInfo()
			return out.Print(c.OutOrStdout(), i, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "BINARY\tVERSION\tCOMMIT\tGO")
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", binary, i.Version, i.Commit, i.GoVersion)
				return tw.Flush()
			})
		},
	}
	out.Register(c)
	return c
}

// BuildInfoCollector is the federate_build_info gauge: always 1, with the
// build's version, commit and Go version as labels, so that a dashboard
// can tell which build each process runs.
func BuildInfoCollector(binary string) prometheus.Collector {
	i := BuildInfo()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "federate_build_info",
		Help: "Always 1; the labels say which build of which binary runs.",
		ConstLabels: prometheus.Labels{
			"binary": binary, "version": i.Version, "commit": i.Commit, "goversion": i.GoVersion,
		},
	})
	g.Set(1)
	return g
}
