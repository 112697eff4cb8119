package cli

import (
	"encoding/json"
	"io"
	"slices"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// Formats are the values of -o for commands that print data.
var Formats = []string{"table", "json", "yaml"}

// Output is the -o flag of a command that prints data.
type Output struct{ format string }

// Register adds -o/--output to c, with shell completion of its values.
func (o *Output) Register(c *cobra.Command) {
	c.Flags().StringVarP(&o.format, "output", "o", "table", "output format: table, json or yaml")
	_ = c.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(Formats, cobra.ShellCompDirectiveNoFileComp))
}

// Check refuses an unknown format as a usage error; run it before any
// work, so that a typo costs nothing.
func (o *Output) Check() error {
	if !slices.Contains(Formats, o.format) {
		return Usagef("-o %q: want table, json or yaml", o.format)
	}
	return nil
}

// Table reports whether the output is the human table.
func (o *Output) Table() bool { return o.format == "table" }

// Print writes v as JSON or YAML (through its JSON field names, so both
// have one shape), or calls table.
func (o *Output) Print(w io.Writer, v any, table func(io.Writer) error) error {
	switch o.format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		data, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	return table(w)
}

// Format is the -o value: table, json or yaml.
func (o *Output) Format() string { return o.format }
