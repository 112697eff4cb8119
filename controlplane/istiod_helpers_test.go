package controlplane_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/trust"
	networkingpb "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	clusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	endpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// writeCACerts writes Istio plug-in CA files for one cluster: a fresh
// intermediate under root, for both that cluster's istiod and its
// federate control plane (the shared-root trust mode).
func writeCACerts(t *testing.T, dir string, root *trust.CA) {
	t.Helper()
	now := time.Now()
	key, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{Organization: []string{"federate-test"}, CommonName: "intermediate " + filepath.Base(dir)},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
		URIs: root.Cert.URIs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, key.Public(), root.Key)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(der)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		trust.CACertFile:    trust.EncodeCertificates(inter),
		trust.CAKeyFile:     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		trust.RootCertFile:  trust.EncodeCertificates(root.Cert),
		trust.CertChainFile: trust.EncodeCertificates(inter, root.Cert),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// sidecarNode is the node an Envoy sidecar of pod sleep-1 in namespace shop
// of cluster east sends, as Istio's agent fills it in.
func sidecarNode(cluster, network, meshID string, locality *corepb.Locality) *corepb.Node {
	meta, err := structpb.NewStruct(map[string]any{
		"CLUSTER_ID": cluster, "NETWORK": network, "MESH_ID": meshID,
		"ISTIO_VERSION": "1.29.0", "NAMESPACE": "shop", "NAME": "sleep-1",
		"LABELS":        map[string]any{"app": "sleep", "version": "v1"},
		"WORKLOAD_NAME": "sleep", "SERVICE_ACCOUNT": "sleep", "INSTANCE_IPS": "10.1.0.9",
		"INTERCEPTION_MODE": "REDIRECT", "ENVOY_STATUS_PORT": 15021, "ENVOY_PROMETHEUS_PORT": 15090,
		"OWNER": "kubernetes://apis/apps/v1/namespaces/shop/deployments/sleep",
	})
	if err != nil {
		panic(err)
	}
	return &corepb.Node{
		Id: "sidecar~10.1.0.9~sleep-1.shop~shop.svc.cluster.local", Cluster: "sleep.shop",
		Metadata: meta, Locality: locality,
	}
}

// adsFetch asks istiod once for resources of typeURL over a new ADS
// stream, as Envoy does, and returns what the first response holds.
func adsFetch(ctx context.Context, conn *grpc.ClientConn, node *corepb.Node, typeURL string, names ...string) ([]proto.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&discoverypb.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNames: names}); err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var out []proto.Message
	for _, a := range resp.GetResources() {
		var m proto.Message
		switch typeURL {
		case clusterType:
			m = &clusterpb.Cluster{}
		case endpointType:
			m = &endpointpb.ClusterLoadAssignment{}
		default:
			return nil, fmt.Errorf("type %s", typeURL)
		}
		if err := a.UnmarshalTo(m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func dialIstiod(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// clusters returns istiod's CDS for node by name.
func clusters(ctx context.Context, conn *grpc.ClientConn, node *corepb.Node) (map[string]*clusterpb.Cluster, error) {
	msgs, err := adsFetch(ctx, conn, node, clusterType)
	if err != nil {
		return nil, err
	}
	out := map[string]*clusterpb.Cluster{}
	for _, m := range msgs {
		c := m.(*clusterpb.Cluster)
		out[c.GetName()] = c
	}
	return out, nil
}

func mustTD(s string) spiffeid.TrustDomain { return spiffeid.RequireTrustDomainFromString(s) }

// istioGatewayIP is the address of an existing Istio east-west gateway
// (TEST-NET-1): nothing listens there, istiod only has to name it.
const istioGatewayIP = "192.0.2.10"

// applyIstioEastWest is what an Istio multi-network mesh already has in
// east: Istio's east-west gateway Service for network net-west (west's
// Istio network) and a service istiod knows on net-west, legacy.
func applyIstioEastWest(ctx context.Context, t *testing.T, k *kubetest.Cluster, ic istioclient.Interface) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "istio-eastwestgateway", Namespace: "istio-system", Labels: map[string]string{"topology.istio.io/network": "net-west"}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Ports:    []corev1.ServicePort{{Name: "tls", Port: 15443, Protocol: corev1.ProtocolTCP}},
			Selector: map[string]string{"istio": "eastwestgateway"},
		},
	}
	created, err := k.Client.CoreV1().Services("istio-system").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: istioGatewayIP}}
	if _, err := k.Client.CoreV1().Services("istio-system").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	se := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: "shop"}}
	se.Spec.Hosts = []string{"legacy.shop.svc.cluster.local"}
	se.Spec.Location = networkingpb.ServiceEntry_MESH_INTERNAL
	se.Spec.Resolution = networkingpb.ServiceEntry_STATIC
	se.Spec.Ports = []*networkingpb.ServicePort{{Name: "http", Number: 8080, Protocol: "HTTP"}}
	se.Spec.WorkloadSelector = &networkingpb.WorkloadSelector{Labels: map[string]string{"app": "legacy"}}
	if _, err := ic.NetworkingV1().ServiceEntries("shop").Create(ctx, se, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	we := &networkingv1.WorkloadEntry{ObjectMeta: metav1.ObjectMeta{Name: "legacy-1", Namespace: "shop"}}
	we.Spec.Address, we.Spec.Network = "10.20.0.5", "net-west"
	we.Spec.Labels = map[string]string{"app": "legacy", "security.istio.io/tlsMode": "istio"}
	if _, err := ic.NetworkingV1().WorkloadEntries("shop").Create(ctx, we, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// endpointAddrs lists the addresses of an assignment's endpoints.
func endpointAddrs(cla *endpointpb.ClusterLoadAssignment) []string {
	var out []string
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))))
		}
	}
	return out
}
