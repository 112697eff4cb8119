package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/internal/testport"
)

// TestIntegrationKubeFederation runs the hub and three control planes with
// --kubeconfig on three real apiservers, each joined with a token kept in
// a Secret, and a gateway per cluster. A ServiceExport in east becomes a
// ServiceImport in west and central whose EndpointSlice leads, through
// east's gateway, to the process behind east's EndpointSlice.
func TestIntegrationKubeFederation(t *testing.T) {
	t.Parallel()
	clusters := kubetest.Start(t, "east", "west", "central")
	hostIP := kubetest.HostIP(t)
	tmp := t.TempDir()
	hubDir := filepath.Join(tmp, "hub")
	hubAddr := testport.Addr(t)
	background(t, "hub", "--listen", hubAddr, "--data-dir", hubDir, "--mesh", "shop", "--metrics-listen", "127.0.0.1:0",
		"--gossip", testport.Addr(t), "--gossip-profile", "lan")
	admin := filepath.Join(hubDir, hub.AdminCredFile)
	fedtest.EventuallyNil(t, 30*time.Second, "the hub's admin credential", func() error { _, err := os.Stat(admin); return err })

	// east runs with its own --kubeconfig, as the docs show; west and
	// central pick their context in one kubeconfig of all three, as
	// kubectl users do.
	merged := mergeKubeconfigs(t, clusters)
	kubeArgs := func(c *kubetest.Cluster) []string {
		if c.Name == "east" {
			return []string{"--kubeconfig", c.Kubeconfig}
		}
		return []string{"--kubeconfig", merged, "--context", c.Name, "-n", controlplane.DefaultKubeNamespace}
	}
	gatewayAddr := map[string]string{}
	gatewaySecret := map[string]string{"east": "east-gateway", "west": controlplane.DefaultGatewaySecret, "central": controlplane.DefaultGatewaySecret}
	for _, c := range clusters {
		c.InstallCRDs(t)
		c.EnsureNamespace(t, controlplane.DefaultKubeNamespace, nil)
		c.EnsureNamespace(t, "shop", nil)
		var token string
		fedtest.EventuallyNil(t, 30*time.Second, "a join token", func() error {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"token", "create", "--hub", hubAddr, "--cluster", c.Name, "--credential", admin}, &stdout, &stderr)
			token = strings.TrimSpace(stdout.String())
			return err
		})
		out := runOK(t, append([]string{"join", "--token", token}, kubeArgs(c)...)...)
		if !strings.Contains(out, "credential in Secret federate-system/federate-membership") {
			t.Errorf("join output: %s", out)
		}
		gatewayAddr[c.Name] = net.JoinHostPort(hostIP, strconv.Itoa(portOf(t, testport.Addr(t))))
		dataDir := filepath.Join(tmp, c.Name)
		api := testport.Addr(t)
		background(t, append([]string{"controlplane", "--cluster", c.Name, "--network", "net-" + c.Name, "--locality", "region-" + c.Name + "/zone-a",
			"--data-dir", dataDir, "--listen", api, "--metrics-listen", "127.0.0.1:0", "--gossip", testport.Addr(t),
			"--gateway", gatewayAddr[c.Name], "--gossip-profile", "lan", "--stale-after", "5s", "--dead-after", "15s", "--expire-after", "1h",
			"--gateway-secret", gatewaySecret[c.Name]},
			kubeArgs(c)...)...)
		startGateway(t, dataDir, c.Name, api, gatewayAddr[c.Name])
	}
	east, west, central := clusters[0], clusters[1], clusters[2]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// order in east: a Service, an EndpointSlice at a local process, an export.
	backend := net.JoinHostPort(hostIP, strconv.Itoa(portOf(t, testport.Addr(t))))
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
		fedtest.EventuallyNil(t, 90*time.Second, "order imported into "+c.Name, func() error {
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
		fedtest.EventuallyNil(t, 30*time.Second, "TCP from "+c.Name+" through east's gateway", func() error {
			got, err = dialSNI(target, sni)
			if err == nil && got != "order says hello\n" {
				err = fmt.Errorf("read %q", got)
			}
			return err
		})
	}

	// Each control plane keeps its gateway's Secret under --gateway-secret.
	for _, c := range clusters {
		fedtest.EventuallyNil(t, 30*time.Second, "the gateway Secret in "+c.Name, func() error {
			sec, err := c.Client.CoreV1().Secrets(controlplane.DefaultKubeNamespace).Get(ctx, gatewaySecret[c.Name], metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(sec.Data["gateway.pem"]) == 0 || len(sec.Data["ca.pem"]) == 0 {
				return fmt.Errorf("keys: %v", sec.Data)
			}
			return nil
		})
	}

	// Deleting the export withdraws the import everywhere, and the gateway
	// stops relaying the name.
	if err := eastMCS.MulticlusterV1beta1().ServiceExports("shop").Delete(ctx, "order", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*kubetest.Cluster{west, central} {
		mcs, _ := mcsclient.NewForConfig(c.Config)
		fedtest.EventuallyNil(t, 60*time.Second, "order withdrawn from "+c.Name, func() error {
			_, err := mcs.MulticlusterV1beta1().ServiceImports("shop").Get(ctx, "order", metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("still imported (%v)", err)
		})
	}
	fedtest.EventuallyNil(t, 30*time.Second, "east's gateway refusing the withdrawn name", func() error {
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

// mergeKubeconfigs writes one kubeconfig with every cluster's context,
// named after the cluster.
func mergeKubeconfigs(t *testing.T, clusters []*kubetest.Cluster) string {
	t.Helper()
	var paths []string
	for _, c := range clusters {
		paths = append(paths, c.Kubeconfig)
	}
	cfg, err := (&clientcmd.ClientConfigLoadingRules{Precedence: paths}).Load()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
