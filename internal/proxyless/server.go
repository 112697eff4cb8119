package proxyless

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/federate/federate/agent"
)

// Serve runs a gRPC health server on listen until ctx ends, with mTLS
// from the SVID files in svidDir: it presents svid.pem and requires a
// client SVID that chains to bundle.pem. Both are read at every
// handshake, so a renewal applies at once.
func Serve(ctx context.Context, listen, svidDir string) error {
	if _, err := loadSVID(svidDir); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("proxyless: %w", err)
	}
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return loadSVID(svidDir)
		},
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(conf)))
	healthpb.RegisterHealthServer(srv, grpchealth.NewServer())
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(5*time.Second, srv.Stop)
		defer t.Stop()
		srv.GracefulStop()
	})
	defer stop()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// loadSVID reads the server's configuration from the SVID files.
func loadSVID(dir string) (*tls.Config, error) {
	svid := filepath.Join(dir, agent.SVIDPEMFile)
	cert, err := tls.LoadX509KeyPair(svid, svid)
	if err != nil {
		return nil, fmt.Errorf("proxyless: SVID %s (does 'federate-agent svid' write there?): %w", svid, err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, agent.BundleFile))
	if err != nil {
		return nil, fmt.Errorf("proxyless: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("proxyless: %s holds no certificate", filepath.Join(dir, agent.BundleFile))
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"},
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: roots,
		// A client SVID, not any certificate of those roots.
		VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
			if len(chains) == 0 || len(chains[0][0].URIs) != 1 || chains[0][0].URIs[0].Scheme != "spiffe" {
				return errors.New("proxyless: the client certificate is not an SVID")
			}
			return nil
		},
	}, nil
}
