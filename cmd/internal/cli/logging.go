package cli

import (
	"io"
	"log/slog"

	"github.com/spf13/cobra"
)

// LogFlags are --log-level and --log-format of a command that logs.
type LogFlags struct{ level, format string }

// Register adds the flags to c, with shell completion of their values.
func (l *LogFlags) Register(c *cobra.Command) {
	c.Flags().StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	c.Flags().StringVar(&l.format, "log-format", "text", "log format: text (logfmt) or json (one object per line)")
	_ = c.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions([]string{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))
	_ = c.RegisterFlagCompletionFunc("log-format", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
}

// Logger returns the logger the flags ask for, writing to w; bad values
// are usage errors.
func (l *LogFlags) Logger(w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.level)); err != nil {
		return nil, Usagef("--log-level %q: want debug, info, warn or error", l.level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, Usagef("--log-format %q: want text or json", l.format)
}
