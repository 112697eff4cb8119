package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/federate/federate/gossip"
)

type logFlags struct{ level string }

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", l.level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv})), nil
}

// timerFlags are the staleness timers shared by the hub and control planes.
type timerFlags struct{ gossip.Timers }

func (t *timerFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&t.StaleAfter, "stale-after", gossip.DefaultStaleAfter, "mark a cluster's endpoints unhealthy when it has not been confirmed alive for this long")
	fs.DurationVar(&t.DeadAfter, "dead-after", gossip.DefaultDeadAfter, "declare a cluster dead when it has not been confirmed alive for this long")
	fs.DurationVar(&t.ExpireAfter, "expire-after", gossip.DefaultExpireAfter, "remove a cluster's slice when it has not been confirmed alive for this long")
}

func (t *timerFlags) validate() error {
	if t.StaleAfter <= 0 || t.DeadAfter < t.StaleAfter || t.ExpireAfter < t.DeadAfter {
		return fmt.Errorf("timers must satisfy 0 < --stale-after (%s) <= --dead-after (%s) <= --expire-after (%s)", t.StaleAfter, t.DeadAfter, t.ExpireAfter)
	}
	if t.StaleAfter < time.Second {
		return fmt.Errorf("--stale-after %s is below the 1s gossip resolution", t.StaleAfter)
	}
	return nil
}
