package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"

	"github.com/federate/federate/cmd/internal/cli"
)

// metricsFlags serve Prometheus metrics and a health check for the hub
// and the control plane.
type metricsFlags struct{ listen string }

func (f *metricsFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.listen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics and a health check at /healthz, e.g. 0.0.0.0:15020 (default: off)")
}

// start listens at once, so that a busy port fails the command, and serves
// until the returned stop is called; stop waits for the server to end.
// /healthz answers 503 until ready is closed, and while check (if any)
// fails. Without --metrics-listen it does nothing.
func (f *metricsFlags) start(ready <-chan struct{}, check func() error, c prometheus.Collector, log *slog.Logger) (stop func(), err error) {
	if f.listen == "" {
		return func() {}, nil
	}
	lis, err := net.Listen("tcp", f.listen)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	srv := &http.Server{Handler: metricsHandler(ready, check, c), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", lis.Addr().String(), "err", err)
		}
	}()
	log.Info("serving metrics", "addr", lis.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

func metricsHandler(ready <-chan struct{}, check func() error, c prometheus.Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, cli.BuildInfoCollector("federate"), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-ready:
		default:
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		if check != nil {
			if err := check(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
