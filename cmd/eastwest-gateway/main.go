// Command eastwest-gateway is a cluster's east-west gateway: it routes
// cross-cluster TLS by SNI without terminating it, as its control plane
// configures it over xDS.
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/eastwest/xdsclient"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/trust"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "eastwest-gateway:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("eastwest-gateway", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprint(stdout, "Usage: eastwest-gateway --control-plane ADDR --credential FILE [flags]\n\n"+
			"Routes cross-cluster TLS by SNI (outbound_.<port>_.<subset>_.<host>) to this\n"+
			"cluster's exported services, without terminating it. Its configuration comes\n"+
			"from the control plane over xDS; its SVID (written by the control plane into\n"+
			"its data directory as gateway.pem) is renewed with the SVID itself. It also\n"+
			"routes its own cluster's internal names, controlplane.<cluster>.federate.internal\n"+
			"and gossip.<cluster>.federate.internal, to the control plane, so that other\n"+
			"clusters and VM agents need to reach only this port. Any other name is refused.\n\n"+
			"Example:\n"+
			"  eastwest-gateway --control-plane 127.0.0.1:15013 --credential /var/lib/federate/gateway.pem\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var controlPlane, credPath, caPath, listen, health, nodeID, level string
	fs.StringVar(&controlPlane, "control-plane", "", "the control plane's federation API address")
	fs.StringVar(&credPath, "credential", "", "the gateway's SVID and key (PEM); renewals are written back")
	fs.StringVar(&caPath, "ca", "", "mesh CA certificate (default: ca.pem beside the credential)")
	fs.StringVar(&listen, "listen", "0.0.0.0:15443", "TLS passthrough address")
	fs.StringVar(&health, "health", "0.0.0.0:15021", "health, stats and metrics address: /healthz/ready, /livez, /stats, /metrics (Prometheus)")
	fs.StringVar(&nodeID, "node-id", "", "xDS node ID (default: the host name)")
	fs.StringVar(&level, "log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if controlPlane == "" || credPath == "" {
		fs.Usage()
		return errors.New("--control-plane and --credential are required")
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	if nodeID == "" {
		nodeID, _ = os.Hostname()
	}
	if caPath == "" {
		caPath = filepath.Join(filepath.Dir(credPath), "ca.pem")
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	return serve(ctx, options{controlPlane: controlPlane, credPath: credPath, caPath: caPath, listen: listen, health: health, nodeID: nodeID}, log)
}

// options are the gateway's flags.
type options struct {
	controlPlane, credPath, caPath, listen, health, nodeID string
}

// serve runs the gateway until ctx is done or a part fails.
func serve(ctx context.Context, o options, log *slog.Logger) error {
	controlPlane, credPath, caPath, listen, health, nodeID := o.controlPlane, o.credPath, o.caPath, o.listen, o.health, o.nodeID
	cred, err := trust.LoadCredential(credPath)
	if err != nil {
		return err
	}
	cas, err := trust.LoadCertificates(caPath)
	if err != nil {
		return err
	}
	mesh, err := meshOf(cas[0])
	if err != nil {
		return fmt.Errorf("%s: %w", caPath, err)
	}
	tlsConf := trust.ClientTLS(cred, trust.Bundle(mesh, cas...), func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if id.MemberOf(mesh) && strings.HasPrefix(id.Path(), "/cluster/") {
			return nil
		}
		return fmt.Errorf("%s is not a control plane of mesh %s", id, mesh)
	})
	conn, err := grpc.NewClient(controlPlane, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)))
	if err != nil {
		return err
	}
	defer conn.Close()

	routes := &xdsclient.Routes{}
	client := xdsclient.NewClient(xdsclient.ClientConfig{Conn: conn, NodeID: nodeID, Logger: log, OnUpdate: func(t *xdsclient.Table) {
		routes.Set(t)
		log.Info("routing table updated", "version", t.Version, "routes", len(t.Routes))
	}})
	gw, err := eastwest.New(eastwest.Config{Router: routes, Listen: listen, Logger: log})
	if err != nil {
		return err
	}
	renewer := &trust.Renewer{
		Credential: cred, Logger: log,
		Sign: func(ctx context.Context, csr []byte) ([]*x509.Certificate, error) {
			resp, err := hubpb.NewControlPlaneClient(conn).SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: cred.ID().String()})
			if err != nil {
				return nil, err
			}
			return trust.ParseCertificates(resp.GetCertificates())
		},
		OnRenew: func(c *trust.Credential) {
			if err := c.Save(credPath); err != nil {
				log.Error("save renewed credential", "path", credPath, "err", err)
			}
		},
	}
	healthLis, err := net.Listen("tcp", health)
	if err != nil {
		return fmt.Errorf("health listener: %w", err)
	}
	httpSrv := &http.Server{Handler: healthHandler(routes, gw), ReadHeaderTimeout: 5 * time.Second}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return client.Run(ctx) })
	g.Go(func() error { return renewer.Run(ctx) })
	g.Go(func() error { return gw.Run(ctx) })
	g.Go(func() error {
		if err := httpSrv.Serve(healthLis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return httpSrv.Shutdown(sctx)
	})
	log.Info("gateway starting", "listen", listen, "health", healthLis.Addr().String(), "control_plane", controlPlane, "id", cred.ID())
	return g.Wait()
}

func healthHandler(routes *xdsclient.Routes, gw *eastwest.Gateway) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !routes.Ready() {
			http.Error(w, "no configuration from the control plane yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	// Alive while the process answers, never tied to the control plane: a
	// gateway that lost it keeps routing with its last routes.
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	reg := prometheus.NewRegistry()
	reg.MustRegister(gw.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(gw.Stats())
	})
	return mux
}

// meshOf reads the mesh trust domain from the mesh CA certificate.
func meshOf(ca *x509.Certificate) (spiffeid.TrustDomain, error) {
	if len(ca.URIs) != 1 {
		return spiffeid.TrustDomain{}, errors.New("the mesh CA certificate carries no SPIFFE trust domain")
	}
	return spiffeid.TrustDomainFromURI(ca.URIs[0])
}
