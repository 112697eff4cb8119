package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/gossip"
)

// timerFlags are the staleness timers shared by the hub and control planes.
type timerFlags struct{ gossip.Timers }

func (t *timerFlags) register(fs *pflag.FlagSet) {
	fs.DurationVar(&t.StaleAfter, "stale-after", gossip.DefaultStaleAfter, "mark a cluster's endpoints unhealthy when it has not been confirmed alive for this long")
	fs.DurationVar(&t.DeadAfter, "dead-after", gossip.DefaultDeadAfter, "declare a cluster dead when it has not been confirmed alive for this long")
	fs.DurationVar(&t.ExpireAfter, "expire-after", gossip.DefaultExpireAfter, "remove a cluster's slice when it has not been confirmed alive for this long")
}

func (t *timerFlags) validate() error {
	if t.StaleAfter <= 0 || t.DeadAfter < t.StaleAfter || t.ExpireAfter < t.DeadAfter {
		return cli.Usagef("timers must satisfy 0 < --stale-after (%s) <= --dead-after (%s) <= --expire-after (%s)", t.StaleAfter, t.DeadAfter, t.ExpireAfter)
	}
	if t.StaleAfter < time.Second {
		return cli.Usagef("--stale-after %s is below the 1s gossip resolution", t.StaleAfter)
	}
	return nil
}
