// Package probe serves what Kubernetes and Prometheus ask a long-running
// federate process: /livez, /readyz (and /healthz, its old name), /metrics,
// and the standard gRPC health service, all on one plaintext port.
//
// The gRPC health service is here, not on the mTLS API ports: a kubelet
// 'grpc:' probe speaks plaintext HTTP/2 and presents no certificate, and
// the API ports must keep refusing callers without one. The port carries
// nothing but health and metrics: a gRPC caller reaches the health
// service only.
package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Names of the gRPC health services, for a probe's 'service' field: the
// empty name and Readiness follow /readyz, Liveness follows /livez.
const (
	Readiness = "readiness"
	Liveness  = "liveness"
)

// Paths served over HTTP.
const (
	LivePath    = "/livez"
	ReadyPath   = "/readyz"
	HealthzPath = "/healthz" // an alias of /readyz, as before /readyz existed
	MetricsPath = "/metrics"
)

// DefaultListen is the health and metrics address of the hub and the
// control plane.
const DefaultListen = "0.0.0.0:15020"

// statusInterval is how often the gRPC health service's statuses are
// recomputed from the checks (a Check or Watch sees at most this lag).
const statusInterval = time.Second

// Config configures a probe server.
type Config struct {
	// Listen is the address; ":0" picks a free port.
	Listen string
	// Live and Ready return nil while the process is alive and ready to
	// serve; nil functions always pass.
	Live  func() error
	Ready func() error
	// Collectors, if any, are exported at /metrics with the Go runtime's
	// and the process's metrics.
	Collectors []prometheus.Collector
	Logger     *slog.Logger
}

// Server serves the probes; New listens, Run serves.
type Server struct {
	cfg    Config
	lis    net.Listener
	health *health.Server
	grpc   *grpc.Server
	http   *http.Server
}

// New listens on cfg.Listen at once, so that a busy port fails the
// command before it starts anything.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, f := range []*func() error{&cfg.Live, &cfg.Ready} {
		if *f == nil {
			*f = func() error { return nil }
		}
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("probe: listen on %s: %w (choose another address, or turn health and metrics off)", cfg.Listen, err)
	}
	s := &Server{cfg: cfg, lis: lis, health: health.NewServer(), grpc: grpc.NewServer()}
	healthpb.RegisterHealthServer(s.grpc, s.health)
	s.update() // NOT_SERVING until the first check passes
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // kubelet's grpc probe: plaintext HTTP/2
	s.http = &http.Server{Handler: s.handler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, Protocols: &protocols}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Run serves until ctx is done, then stops within a few seconds.
func (s *Server) Run(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.http.Serve(s.lis) }()
	s.cfg.Logger.Info("serving health and metrics", "addr", s.Addr())
	tick := time.NewTicker(statusInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			s.update()
		case err := <-done:
			s.health.Shutdown()
			return fmt.Errorf("probe: health server on %s stopped: %w", s.Addr(), err)
		case <-ctx.Done():
			s.health.Shutdown()
			s.grpc.Stop() // ends Watch streams, which Shutdown would wait out
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = s.http.Shutdown(sctx)
			if err := <-done; !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}
	}
}

// update sets the gRPC health statuses from the checks.
func (s *Server) update() {
	ready, live := serving(s.cfg.Ready()), serving(s.cfg.Live())
	s.health.SetServingStatus("", ready)
	s.health.SetServingStatus(Readiness, ready)
	s.health.SetServingStatus(Liveness, live)
}

func serving(err error) healthpb.HealthCheckResponse_ServingStatus {
	if err != nil {
		return healthpb.HealthCheckResponse_NOT_SERVING
	}
	return healthpb.HealthCheckResponse_SERVING
}

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	if len(s.cfg.Collectors) > 0 {
		reg := prometheus.NewRegistry()
		reg.MustRegister(s.cfg.Collectors...)
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mux.Handle(MetricsPath, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	}
	mux.Handle(LivePath, checkHandler(s.cfg.Live))
	mux.Handle(ReadyPath, checkHandler(s.cfg.Ready))
	mux.Handle(HealthzPath, checkHandler(s.cfg.Ready))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			s.grpc.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// checkHandler answers 200 "ok" while check passes, else 503 with the
// reason, as Kubernetes' own /livez and /readyz do.
func checkHandler(check func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if err := check(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
}
