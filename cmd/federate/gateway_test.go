package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/eastwest/xdsclient"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// startGateway runs an east-west gateway as cmd/eastwest-gateway wires it,
// with the SVID its control plane wrote, listening on addr.
func startGateway(t *testing.T, dataDir, cluster, controlPlane, addr string) {
	t.Helper()
	var cred *trust.Credential
	fedtest.EventuallyNil(t, 30*time.Second, cluster+"'s gateway credential", func() (err error) {
		cred, err = trust.LoadCredential(filepath.Join(dataDir, controlplane.GatewayCredentialFile))
		return err
	})
	cas, err := trust.LoadCertificates(filepath.Join(dataDir, membership.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	mesh := spiffeid.RequireTrustDomainFromString("shop")
	conn, err := grpc.NewClient(controlPlane, grpc.WithTransportCredentials(credentials.NewTLS(
		trust.ClientTLS(cred, trust.Bundle(mesh, cas...), tlsconfig.AuthorizeID(membership.ClusterID(mesh, cluster))))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	routes := &xdsclient.Routes{}
	xdsDone := make(chan error, 1)
	go func() {
		xdsDone <- xdsclient.NewClient(xdsclient.ClientConfig{Conn: conn, NodeID: cluster + "-gw", OnUpdate: routes.Set}).Run(ctx)
	}()
	// The control planes' peer connections run through the gateways until
	// the test ends: a short drain keeps the cleanup quick.
	gw, err := eastwest.New(eastwest.Config{Router: routes, DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tcpAddr, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.ListenTCP("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-xdsDone
	})
}

// startBackend serves TLS on addr and says hello: the gateway passes TLS
// through, so the backend terminates it.
func startBackend(t *testing.T, addr, hello string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, hello)
			}()
		}
	}()
}

// dialSNI opens TLS through a gateway with an Istio SNI and reads to EOF.
func dialSNI(addr, sni string) (string, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{
		ServerName: sni, MinVersion: tls.VersionTLS12,
		InsecureSkipVerify: true, // the backend's identity is not what this test checks
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}
