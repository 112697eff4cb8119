package controlplane_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
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

	"github.com/federate/federate/trust"
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
