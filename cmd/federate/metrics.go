package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/internal/probe"
)

// metricsFlags serve Prometheus metrics, the health checks and the gRPC
// health service of the hub and the control plane (package probe).
type metricsFlags struct{ listen string }

func (f *metricsFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.listen, "metrics-listen", probe.DefaultListen, "plaintext address of Prometheus metrics (/metrics), health checks (/livez, /readyz; /healthz is /readyz)\n"+
		"and the standard gRPC health service (for Kubernetes 'grpc:' probes); \"off\" turns it off")
}

// start listens at once, so that a busy port fails the command, and serves
// until the returned stop is called; stop waits for the server to end.
func (f *metricsFlags) start(live, ready func() error, c prometheus.Collector, log *slog.Logger) (stop func(), err error) {
	if f.listen == "" || f.listen == "off" {
		return func() {}, nil
	}
	srv, err := probe.New(probe.Config{Listen: f.listen, Live: live, Ready: ready, Logger: log,
		Collectors: []prometheus.Collector{c, cli.BuildInfoCollector("federate")}})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Run(ctx); err != nil {
			log.Error("health and metrics server stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
