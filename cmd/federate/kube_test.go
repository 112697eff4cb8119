package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
)

// lockedBuffer collects a command's output while it runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// background runs a federate command until the test ends.
func background(t *testing.T, args ...string) *lockedBuffer {
	t.Helper()
	out := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, out, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !strings.Contains(err.Error(), "context canceled") {
				t.Errorf("federate %s: %v\n%s", args[0], err, out.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("federate %s did not stop within 30s", args[0])
		}
	})
	return out
}

func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("federate %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startGateway runs an east-west gateway as cmd/eastwest-gateway wires it,
// with the SVID its control plane wrote, listening on addr.
func startGateway(t *testing.T, dataDir, cluster, controlPlane, addr string) {
	t.Helper()
	var cred *trust.Credential
	waitFor(t, 30*time.Second, cluster+"'s gateway credential", func() (err error) {
		cred, err = trust.LoadCredential(filepath.Join(dataDir, GatewayCredentialFile))
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
	routes := &xds.Routes{}
	xdsDone := make(chan error, 1)
	go func() {
		xdsDone <- xds.NewClient(xds.ClientConfig{Conn: conn, NodeID: cluster + "-gw", OnUpdate: routes.Set}).Run(ctx)
	}()
	gw, err := eastwest.New(eastwest.Config{Router: routes})
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

// TestIntegrationKubeFederation runs the hub and three control planes with
// --kubeconfig on three real apiservers, each joined with a token kept in
// a Secret, and a gateway per cluster. A ServiceExport in east becomes a
// ServiceImport in west and central whose EndpointSlice leads, through
// east's gateway, to the process behind east's EndpointSlice.
func TestIntegrationKubeFederation(t *testing.T) {
	clusters := kubetest.Start(t, "east", "west", "central")
	hostIP := kubetest.HostIP(t)
	tmp := t.TempDir()
	hubDir := filepath.Join(tmp, "hub")
	hubAddr := kubetest.FreeAddr(t)
	background(t, "hub", "--listen", hubAddr, "--data-dir", hubDir, "--mesh", "shop",
		"--gossip", kubetest.FreeAddr(t), "--gossip-profile", "lan")
	admin := filepath.Join(hubDir, hub.AdminCredFile)
	waitFor(t, 30*time.Second, "the hub's admin credential", func() error { _, err := os.Stat(admin); return err })

	gatewayAddr := map[string]string{}
	for _, c := range clusters {
		c.InstallCRDs(t)
		c.EnsureNamespace(t, DefaultKubeNamespace, nil)
		c.EnsureNamespace(t, "shop", nil)
		var token string
		waitFor(t, 30*time.Second, "a join token", func() error {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"token", "create", "--hub", hubAddr, "--cluster", c.Name, "--credential", admin}, &stdout, &stderr)
			token = strings.TrimSpace(stdout.String())
			return err
		})
		out := runOK(t, "join", "--token", token, "--kubeconfig", c.Kubeconfig)
		if !strings.Contains(out, "credential in Secret federate-system/federate-membership") {
			t.Errorf("join output: %s", out)
		}
		gatewayAddr[c.Name] = net.JoinHostPort(hostIP, strconv.Itoa(portOf(t, kubetest.FreeAddr(t))))
		dataDir := filepath.Join(tmp, c.Name)
		api := kubetest.FreeAddr(t)
		background(t, "controlplane", "--cluster", c.Name, "--network", "net-"+c.Name, "--locality", "region-"+c.Name+"/zone-a",
			"--data-dir", dataDir, "--kubeconfig", c.Kubeconfig, "--listen", api, "--gossip", kubetest.FreeAddr(t),
			"--gateway", gatewayAddr[c.Name], "--gossip-profile", "lan", "--stale-after", "5s", "--dead-after", "15s", "--expire-after", "1h")
		startGateway(t, dataDir, c.Name, api, gatewayAddr[c.Name])
	}
	east, west, central := clusters[0], clusters[1], clusters[2]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// order in east: a Service, an EndpointSlice at a local process, an export.
	backend := net.JoinHostPort(hostIP, strconv.Itoa(portOf(t, kubetest.FreeAddr(t))))
	startBackend(t, backend, "order says hello\n")
	_, err := east.Client.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "order", Namespace: "shop"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	name, proto, bport := "http", corev1.ProtocolTCP, int32(portOf(t, backend))
	_, err = east.Client.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "order-1", Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: "order"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{hostIP}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &bport, Protocol: &proto}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eastMCS, err := mcsclient.NewForConfig(east.Config)
	if err != nil {
		t.Fatal(err)
	}
	_, err = eastMCS.MulticlusterV1beta1().ServiceExports("shop").Create(ctx, &mcsv1beta1.ServiceExport{
		ObjectMeta: metav1.ObjectMeta{Name: "order", Namespace: "shop"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	sni := xds.ClusterName(8080, "", "order.shop.svc.cluster.local")
	for _, c := range []*kubetest.Cluster{west, central} {
		mcs, err := mcsclient.NewForConfig(c.Config)
		if err != nil {
			t.Fatal(err)
		}
		// The import, and its EndpointSlice at east's gateway, from c's API alone.
		var target string
		waitFor(t, 90*time.Second, "order imported into "+c.Name, func() error {
			if _, err := mcs.MulticlusterV1beta1().ServiceImports("shop").Get(ctx, "order", metav1.GetOptions{}); err != nil {
				return err
			}
			es, err := c.Client.DiscoveryV1().EndpointSlices("shop").Get(ctx, "order-east", metav1.GetOptions{})
			if err != nil {
				return err
			}
			target = net.JoinHostPort(es.Endpoints[0].Addresses[0], strconv.Itoa(int(*es.Ports[0].Port)))
			return nil
		})
		if target != gatewayAddr["east"] {
			t.Errorf("%s's EndpointSlice for order points at %s, want east's gateway %s", c.Name, target, gatewayAddr["east"])
		}
		var got string
		waitFor(t, 30*time.Second, "TCP from "+c.Name+" through east's gateway", func() error {
			got, err = dialSNI(target, sni)
			if err == nil && got != "order says hello\n" {
				err = fmt.Errorf("read %q", got)
			}
			return err
		})
	}

	// Deleting the export withdraws the import everywhere, and the gateway
	// stops relaying the name.
	if err := eastMCS.MulticlusterV1beta1().ServiceExports("shop").Delete(ctx, "order", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*kubetest.Cluster{west, central} {
		mcs, _ := mcsclient.NewForConfig(c.Config)
		waitFor(t, 60*time.Second, "order withdrawn from "+c.Name, func() error {
			_, err := mcs.MulticlusterV1beta1().ServiceImports("shop").Get(ctx, "order", metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still imported (%v)", err)
		})
	}
	waitFor(t, 30*time.Second, "east's gateway refusing the withdrawn name", func() error {
		if got, err := dialSNI(gatewayAddr["east"], sni); err == nil && got != "" {
			return fmt.Errorf("still relayed: %q", got)
		}
		return nil
	})
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// A membership Secret with a broken credential stops the control plane at
// start, naming the Secret and the way out.
func TestIntegrationBrokenMembershipSecret(t *testing.T) {
	c := kubetest.Start(t, "broken")[0]
	c.EnsureNamespace(t, DefaultKubeNamespace, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.Client.CoreV1().Secrets(DefaultKubeNamespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultMembershipSecret},
		Data: map[string][]byte{
			membership.MembershipFile: []byte(`{"mesh":"shop","cluster":"broken","hub":"127.0.0.1:1"}`),
			membership.CredentialFile: []byte("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"),
			membership.CAFile:         []byte("junk"),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err = run(ctx, []string{"controlplane", "--cluster", "broken", "--network", "n", "--data-dir", t.TempDir(),
		"--kubeconfig", c.Kubeconfig, "--gateway", "192.0.2.1:15443"}, &stdout, &stderr)
	if err == nil {
		t.Fatal("the control plane started with a broken credential")
	}
	for _, want := range []string{"membership Secret federate-system/federate-membership", "credential.pem", "federate join --token TOKEN --kubeconfig"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// Without a kubeconfig that works, the error names the file.
	err = run(ctx, []string{"join", "--token", "x", "--kubeconfig", filepath.Join(t.TempDir(), "missing")}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Errorf("join with a missing kubeconfig: %v", err)
	}
}
