// Command eastwest-gateway is a cluster's east-west gateway: it routes
// cross-cluster TLS by SNI without terminating it, as its control plane
// configures it over xDS.
package main

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/federate/federate/cmd/internal/cli"
	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/eastwest/xdsclient"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/trust"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.ExitCode("eastwest-gateway", run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cli.Execute(ctx, rootCommand(), args, stdout, stderr)
}

func rootCommand() *cobra.Command {
	var o options
	var logs cli.LogFlags
	root := &cobra.Command{
		Use:   "eastwest-gateway --control-plane ADDR --credential FILE [flags]",
		Short: "a cluster's east-west gateway",
		Long: "Routes cross-cluster TLS by SNI (outbound_.<port>_.<subset>_.<host>) to this\n" +
			"cluster's exported services, without terminating it. Its configuration comes\n" +
			"from the control plane over xDS; its SVID (written by the control plane into\n" +
			"its data directory as gateway.pem, or in Kubernetes into the Secret\n" +
			"federate-gateway) is renewed with the SVID itself; a read-only file (a\n" +
			"mounted Secret) keeps renewals in memory and is re-read when it changes. It also\n" +
			"routes its own cluster's internal names, controlplane.<cluster>.federate.internal\n" +
			"and gossip.<cluster>.federate.internal, to the control plane, so that other\n" +
			"clusters and VM agents need to reach only this port. Any other name is refused.",
		Example: "  eastwest-gateway --control-plane 127.0.0.1:15013 --credential /var/lib/federate/gateway.pem",
		Args:    cli.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o.credPath = cmp.Or(o.credPath, os.Getenv("FEDERATE_CREDENTIAL"))
			if o.controlPlane == "" || o.credPath == "" {
				return cli.Usagef("--control-plane and --credential (or $FEDERATE_CREDENTIAL) are required")
			}
			log, err := logs.Logger(c.ErrOrStderr())
			if err != nil {
				return err
			}
			cli.BridgeKlog(log)
			if o.nodeID == "" {
				o.nodeID, _ = os.Hostname()
			}
			if o.caPath == "" {
				o.caPath = filepath.Join(filepath.Dir(o.credPath), "ca.pem")
			}
			return serve(c.Context(), o, log)
		},
	}
	fs := root.Flags()
	fs.StringVar(&o.controlPlane, "control-plane", "", "the control plane's federation API address")
	fs.StringVar(&o.credPath, "credential", "", "the gateway's SVID and key (PEM); renewals are written back unless it is read-only (default $FEDERATE_CREDENTIAL)")
	fs.StringVar(&o.caPath, "ca", "", "mesh CA certificate (default: ca.pem beside the credential)")
	fs.StringVar(&o.listen, "listen", "0.0.0.0:15443", "TLS passthrough address")
	fs.StringVar(&o.health, "health", "0.0.0.0:15021", "health, stats and metrics address: /healthz/ready, /livez, /stats, /metrics (Prometheus)")
	fs.StringVar(&o.nodeID, "node-id", "", "xDS node ID (default: the host name)")
	logs.Register(root)
	root.AddCommand(cli.VersionCommand("eastwest-gateway"))
	return root
}

// options are the gateway's flags.
type options struct {
	controlPlane, credPath, caPath, listen, health, nodeID string
}

// serve runs the gateway until ctx is done or a part fails.
func serve(ctx context.Context, o options, log *slog.Logger) error {
	controlPlane, credPath, caPath, listen, health, nodeID := o.controlPlane, o.credPath, o.caPath, o.listen, o.health, o.nodeID
	cred, err := trust.LoadCredential(credPath)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("--credential %s does not exist: the control plane writes the gateway's first SVID when it starts "+
			"(gateway.pem in its --data-dir, or its --gateway-credential): start it first, or pass that file", credPath)
	}
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("--credential %s: permission denied: run the gateway as the user the control plane wrote it as, or give the gateway's user read access (mode 0600 by default)", credPath)
	}
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
	file := newCredentialFile(credPath, cred, log)
	renewer := &trust.Renewer{
		Credential: cred, Logger: log,
		Sign: func(ctx context.Context, csr []byte) ([]*x509.Certificate, error) {
			resp, err := hubpb.NewControlPlaneClient(conn).SignCertificate(ctx, &hubpb.SignCertificateRequest{Csr: csr, SpiffeId: cred.ID().String()})
			if err != nil {
				return nil, err
			}
			return trust.ParseCertificates(resp.GetCertificates())
		},
		OnRenew: file.saveRenewal,
	}
	healthLis, err := net.Listen("tcp", health)
	if err != nil {
		return fmt.Errorf("health listener: %w", err)
	}
	httpSrv := &http.Server{Handler: healthHandler(routes, gw), ReadHeaderTimeout: 5 * time.Second}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return client.Run(ctx) })
	g.Go(func() error { return renewer.Run(ctx) })
	g.Go(func() error { return file.watch(ctx) })
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
	reg.MustRegister(gw.Collector(), cli.BuildInfoCollector("eastwest-gateway"), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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
