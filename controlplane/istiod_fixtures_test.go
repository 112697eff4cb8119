package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlspb "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingpb "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/federate/federate/controlplane/istiod"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
)

func startIstioKube(t *testing.T) (*kubetest.Cluster, istioclient.Interface) {
	t.Helper()
	k := kubetest.Start(t, "east")[0]
	k.InstallCRDs(t)
	k.ApplyFiles(t, filepath.Join(kubetest.RepoRoot(), "controlplane", "istiod", "testdata", "istio-crds.yaml"))
	k.WaitForResource(t, "networking.istio.io/v1", "serviceentries")
	k.EnsureNamespace(t, "shop", nil)
	k.EnsureNamespace(t, istiod.DefaultNamespace, nil)
	ic, err := istioclient.NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	return k, ic
}

// startCoffeeBackend is a workload of west: mTLS with west's SVID, any
// client of the federation's trust domains, answered with its ID.
func startCoffeeBackend(t *testing.T, west *fedtest.ControlPlane) string {
	t.Helper()
	m := west.Member()
	cred, err := m.Authority().IssueCredential(spiffeid.RequireFromPath(mustTD("west.shop"), "/ns/shop/sa/coffee"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(cred, m.Bundles(), tlsconfig.AuthorizeAny()))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { lis.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				if tc.Handshake() != nil {
					return
				}
				peer := tc.ConnectionState().PeerCertificates[0].URIs[0].String()
				_, _ = io.WriteString(c, "coffee from west for "+peer+"\n")
			}()
		}
	}()
	return lis.Addr().String()
}

// westServices are west's exports: coffee (two endpoints of v1 in eu/a,
// one of v2 in eu/b, all the one backend) and tea.
func westServices(backend string) []*registry.Service {
	_, portStr, _ := net.SplitHostPort(backend)
	port, _ := strconv.Atoi(portStr)
	ep := func(zone, version string) *registry.Endpoint {
		return &registry.Endpoint{
			Address: "127.0.0.1", Ports: map[string]uint32{"http": uint32(port)}, Network: "net-west", Health: registrypb.Health_HEALTHY,
			Locality: &registry.Locality{Region: "eu", Zone: zone}, Labels: map[string]string{"app": "coffee", "version": version},
			SpiffeId: "spiffe://west.shop/ns/shop/sa/coffee",
		}
	}
	coffee := &registry.Service{
		Hostname: coffeeHost, Namespace: "shop", Name: "coffee",
		Ports:     []*registry.Port{{Name: "http", Number: 80, Protocol: "HTTP"}},
		Endpoints: []*registry.Endpoint{ep("a", "v1"), ep("a", "v1"), ep("b", "v2")},
	}
	tea := &registry.Service{
		Hostname: "tea.shop.svc.cluster.local", Namespace: "shop", Name: "tea",
		Ports:     []*registry.Port{{Name: "grpc", Number: 9090, Protocol: "GRPC"}},
		Endpoints: []*registry.Endpoint{ep("b", "v1")},
	}
	return []*registry.Service{coffee, tea}
}

// applyCoffeeRule is the DestinationRule east's users write for coffee:
// subsets by version, and outlier detection, which turns on locality
// priorities.
func applyCoffeeRule(ctx context.Context, t *testing.T, ic istioclient.Interface) {
	t.Helper()
	dr := &networkingv1.DestinationRule{ObjectMeta: metav1.ObjectMeta{Name: "coffee", Namespace: "shop"}}
	dr.Spec.Host = coffeeHost
	dr.Spec.TrafficPolicy = &networkingpb.TrafficPolicy{
		LoadBalancer: &networkingpb.LoadBalancerSettings{LocalityLbSetting: &networkingpb.LocalityLoadBalancerSetting{Enabled: wrapperspb.Bool(true)}},
		OutlierDetection: &networkingpb.OutlierDetection{
			Consecutive_5XxErrors: wrapperspb.UInt32(3), Interval: durationpb.New(time.Second), BaseEjectionTime: durationpb.New(time.Minute),
		},
	}
	dr.Spec.Subsets = []*networkingpb.Subset{{Name: "v1", Labels: map[string]string{"version": "v1"}}, {Name: "v2", Labels: map[string]string{"version": "v2"}}}
	if _, err := ic.NetworkingV1().DestinationRules("shop").Create(ctx, dr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// istioMTLS returns the SNI and SPIFFE IDs of a cluster's Istio mTLS
// transport socket (the tlsMode-istio match).
func istioMTLS(t *testing.T, c *clusterpb.Cluster) (sni string, sans []string) {
	t.Helper()
	for _, m := range c.GetTransportSocketMatches() {
		if m.GetName() != "tlsMode-istio" {
			continue
		}
		var up tlspb.UpstreamTlsContext
		if err := m.GetTransportSocket().GetTypedConfig().UnmarshalTo(&up); err != nil {
			t.Fatal(err)
		}
		v := up.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext()
		for _, s := range v.GetMatchTypedSubjectAltNames() {
			sans = append(sans, s.GetMatcher().GetExact())
		}
		//lint:ignore SA1019 istiod still fills the deprecated field
		for _, m := range v.GetMatchSubjectAltNames() {
			sans = append(sans, m.GetExact())
		}
		return up.GetSni(), sans
	}
	t.Fatalf("cluster %s has no tlsMode-istio transport socket: %v", c.GetName(), c)
	return "", nil
}

// checkLocalities wants every endpoint at the gateway, and the localities
// at the given priorities.
func checkLocalities(cla *endpointpb.ClusterLoadAssignment, gw *net.TCPAddr, want map[string]uint32) error {
	got := map[string]uint32{}
	for _, l := range cla.GetEndpoints() {
		loc := l.GetLocality().GetRegion() + "/" + l.GetLocality().GetZone()
		got[loc] = l.GetPriority()
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			if sa.GetAddress() != gw.IP.String() || sa.GetPortValue() != uint32(gw.Port) {
				return fmt.Errorf("locality %s: endpoint %s:%d, not west's gateway %s", loc, sa.GetAddress(), sa.GetPortValue(), gw)
			}
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("priorities %v, want %v", got, want)
	}
	for loc, p := range want {
		if q, ok := got[loc]; !ok || q != p {
			return fmt.Errorf("priorities %v, want %v", got, want)
		}
	}
	return nil
}

// istiodRoot is the root istiod publishes to the sidecars of namespace
// shop (the istio-ca-root-cert ConfigMap its agents read).
func istiodRoot(ctx context.Context, t *testing.T, k *kubetest.Cluster) []*x509.Certificate {
	t.Helper()
	var roots []*x509.Certificate
	fedtest.EventuallyNil(t, 30*time.Second, "istiod's istio-ca-root-cert in shop", func() error {
		cm, err := k.Client.CoreV1().ConfigMaps("shop").Get(ctx, "istio-ca-root-cert", metav1.GetOptions{})
		if err != nil {
			return err
		}
		roots = nil
		rest := []byte(cm.Data["root-cert.pem"])
		for {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return err
			}
			roots = append(roots, c)
		}
		if len(roots) == 0 {
			return errors.New("no certificate in root-cert.pem")
		}
		return nil
	})
	return roots
}

func issueFromCACerts(t *testing.T, dir, td, path string) *trust.Credential {
	t.Helper()
	a, err := trust.LoadPluginAuthority(mustTD(td), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := a.IssueCredential(spiffeid.RequireFromPath(mustTD(td), path), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// callThroughGateway opens Istio mTLS to gateway with sni, as a sidecar
// does, trusting roots for west's trust domain, and reads one line.
func callThroughGateway(gateway, sni string, cred *trust.Credential, roots []*x509.Certificate) (string, error) {
	bundle := x509bundle.FromX509Authorities(mustTD("west.shop"), roots)
	cfg := tlsconfig.MTLSClientConfig(cred, bundle, tlsconfig.AuthorizeID(spiffeid.RequireFromPath(mustTD("west.shop"), "/ns/shop/sa/coffee")))
	cfg.ServerName, cfg.NextProtos = sni, istioALPNs
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", gateway, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// writtenObjects fails while anything east's control plane wrote for
// istiod is still there.
func writtenObjects(ctx context.Context, k *kubetest.Cluster, ic istioclient.Interface) error {
	list := metav1.ListOptions{LabelSelector: istiod.WrittenForLabel}
	ses, err := ic.NetworkingV1().ServiceEntries("").List(ctx, list)
	if err != nil {
		return err
	}
	wes, err := ic.NetworkingV1().WorkloadEntries("").List(ctx, list)
	if err != nil {
		return err
	}
	svcs, err := k.Client.CoreV1().Services("").List(ctx, list)
	if err != nil {
		return err
	}
	if n := len(ses.Items) + len(wes.Items) + len(svcs.Items); n != 0 {
		return fmt.Errorf("%d ServiceEntries, %d WorkloadEntries, %d Services left", len(ses.Items), len(wes.Items), len(svcs.Items))
	}
	return nil
}
