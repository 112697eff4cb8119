package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/federate/federate/agent"
	"github.com/federate/federate/cmd/internal/cli"
)

// runSidecar runs the agent and its sidecar until ctx ends.
func runSidecar(ctx context.Context, cfg agent.Config, log *slog.Logger, metricsListen string) error {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("--state-dir: %w", err)
	}
	cfg.Logger = log
	cli.BridgeKlog(log)
	var registered atomic.Bool
	cfg.Ready = func() { registered.Store(true) }
	a := agent.New(cfg)
	stopMetrics, err := serveMetrics(metricsListen, a.Collector(registered.Load), registered.Load, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	return a.Run(ctx)
}
