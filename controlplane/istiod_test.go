package controlplane_test

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/istiod"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/trust"
)

const coffeeHost = "coffee.shop.svc.cluster.local"

// istioALPNs are the protocols an Istio sidecar offers on Istio mTLS.
var istioALPNs = []string{"istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"}

// An unmodified istiod in east, fed only by what east's control plane
// writes into east's API, sends a sidecar of east to west's federate
// gateway with Istio's SNI and the DestinationRule's locality priorities;
// a client with that SNI and an SVID of east's CA reaches west's backend
// through west's real gateway, verified with the root istiod gives its
// sidecars; removing west removes what was written.
func TestIntegrationIstiodRoutesSidecarsThroughGateway(t *testing.T) {
	t.Parallel()
	kubetest.IstiodBinary(t) // fails at once, saying how to build it, when it is missing
	ctx := fedtest.DeadlineContext(t, 4*time.Minute)
	tm := fedtest.NewMesh(t, testTimers)
	tm.Join("east")
	tm.Join("west")
	root, err := trust.NewCA(spiffeid.RequireTrustDomainFromString("shop"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	eastCA, westCA := filepath.Join(tm.Dir, "cacerts-east"), filepath.Join(tm.Dir, "cacerts-west")
	writeCACerts(t, eastCA, root)
	writeCACerts(t, westCA, root)

	// West: a control plane on its own CA under the shared root, its
	// gateway, and a TLS backend of coffee that wants a client SVID.
	hostIP := kubetest.HostIP(t)
	westLis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.ParseIP(hostIP)})
	if err != nil {
		t.Fatal(err)
	}
	source := fedtest.NewSource()
	west := tm.StartControlPlane("west", controlplane.Config{Gateway: westLis.Addr().String(), Source: source, PluginCADir: westCA})
	westGW := tm.StartGateway(west, westLis, nil)
	backend := startCoffeeBackend(t, west)
	source.Set(westServices(backend)...)

	// East: a kube-apiserver with istiod on east's CA under the same root,
	// and east's control plane writing for istiod.
	k, ic := startIstioKube(t)
	kube, _ := saveMembership(ctx, t, tm, k, istiod.DefaultNamespace, "east")
	pilot := k.StartIstiod(t, kubetest.IstiodConfig{ClusterID: "east", MeshConfig: "trustDomain: east.shop\n", CACertsDir: eastCA})
	east := tm.StartControlPlane("east", controlplane.Config{
		Kube: kube, IstioWrite: true, Source: fedtest.NewSource(), PluginCADir: eastCA,
		Gateway: fedtest.GatewayListener(t).Addr().String(),
	})
	applyCoffeeRule(ctx, t, ic)
	applyIstioEastWest(ctx, t, k, ic)

	conn := dialIstiod(t, pilot.XDSAddr)
	node := sidecarNode("east", "net-east", "shop", &corepb.Locality{Region: "eu", Zone: "a"})
	gwAddr := westLis.Addr().(*net.TCPAddr)
	var cds map[string]*clusterpb.Cluster
	fedtest.EventuallyNil(t, 90*time.Second, "istiod's clusters for west's services", func() error {
		var err error
		if cds, err = clusters(ctx, conn, node); err != nil {
			return err
		}
		for _, name := range []string{"outbound|80||" + coffeeHost, "outbound|80|v1|" + coffeeHost, "outbound|9090||tea.shop.svc.cluster.local"} {
			if cds[name] == nil {
				return fmt.Errorf("no cluster %s among %d", name, len(cds))
			}
		}
		return nil
	})
	for name, wantSNI := range map[string]string{
		"outbound|80||" + coffeeHost:   "outbound_.80_._." + coffeeHost,
		"outbound|80|v1|" + coffeeHost: "outbound_.80_.v1_." + coffeeHost,
	} {
		sni, sans := istioMTLS(t, cds[name])
		if sni != wantSNI || !slices.Contains(sans, "spiffe://west.shop/ns/shop/sa/coffee") {
			t.Errorf("cluster %s: SNI %q (want %q), SANs %v", name, sni, wantSNI, sans)
		}
	}
	for name := range cds {
		if strings.Contains(name, "secret.shop") {
			t.Errorf("istiod has a cluster for a service west does not export: %s", name)
		}
	}

	// EDS: west's gateway for every locality, eu/a (the sidecar's) first.
	var cla *endpointpb.ClusterLoadAssignment
	fedtest.EventuallyNil(t, 30*time.Second, "coffee's endpoints at west's gateway", func() error {
		msgs, err := adsFetch(ctx, conn, node, endpointType, "outbound|80||"+coffeeHost)
		if err != nil || len(msgs) != 1 {
			return fmt.Errorf("%d assignments, %v", len(msgs), err)
		}
		cla = msgs[0].(*endpointpb.ClusterLoadAssignment)
		return checkLocalities(cla, gwAddr, map[string]uint32{"eu/a": 0, "eu/b": 1})
	})
	// Coexistence: the service istiod knew on Istio's network keeps Istio's
	// east-west gateway, and federate's gateway gets only federate's.
	fedtest.EventuallyNil(t, 30*time.Second, "legacy's endpoints at Istio's east-west gateway", func() error {
		msgs, err := adsFetch(ctx, conn, node, endpointType, "outbound|8080||legacy.shop.svc.cluster.local")
		if err != nil || len(msgs) != 1 {
			return fmt.Errorf("%d assignments, %v", len(msgs), err)
		}
		if got := endpointAddrs(msgs[0].(*endpointpb.ClusterLoadAssignment)); !slices.Equal(got, []string{istioGatewayIP + ":15443"}) {
			return fmt.Errorf("legacy's endpoints %v, want only Istio's gateway", got)
		}
		return nil
	})
	msgs, err := adsFetch(ctx, conn, node, endpointType, "outbound|80|v1|"+coffeeHost)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("subset v1 endpoints: %d, %v", len(msgs), err)
	}
	if err := checkLocalities(msgs[0].(*endpointpb.ClusterLoadAssignment), gwAddr, map[string]uint32{"eu/a": 0}); err != nil {
		t.Errorf("subset v1: %v", err)
	}

	// A client with exactly that SNI and an SVID of east's CA (as istiod
	// issues to its sidecars) reaches west's backend through west's gateway,
	// and verifies it with the root istiod hands its sidecars.
	sidecarRoot := istiodRoot(ctx, t, k)
	check, err := istiod.New(istiod.Config{Kube: k.Client, Istio: ic})
	if err != nil {
		t.Fatal(err)
	}
	fedtest.EventuallyNil(t, 30*time.Second, "istiod's root published in federate-system and in east's bundle", func() error {
		if _, err := k.Client.CoreV1().ConfigMaps(istiod.DefaultNamespace).Get(ctx, istiod.RootConfigMap, metav1.GetOptions{}); err != nil {
			return err
		}
		return check.CheckTrust(ctx, east.Member().Authority().Bundle().X509Authorities())
	})
	sleep := issueFromCACerts(t, eastCA, "east.shop", "/ns/shop/sa/sleep")
	got, err := callThroughGateway(gwAddr.String(), "outbound_.80_._."+coffeeHost, sleep, sidecarRoot)
	if err != nil || got != "coffee from west for spiffe://east.shop/ns/shop/sa/sleep\n" {
		t.Fatalf("through west's gateway: %q, %v", got, err)
	}
	if westGW.Routed("outbound_.80_._."+coffeeHost) == 0 {
		t.Error("west's gateway did not route the connection")
	}
	if _, err := callThroughGateway(gwAddr.String(), "outbound_.80_._.secret.shop.svc.cluster.local", sleep, sidecarRoot); err == nil {
		t.Error("west's gateway routed a service west does not export")
	}

	// West leaves: east's control plane removes what it wrote, and istiod
	// stops sending sidecars there.
	westGW.Stop()
	west.Stop()
	if _, err := tm.AdminClient().RemoveCluster(ctx, &hubpb.RemoveClusterRequest{Cluster: "west"}); err != nil {
		t.Fatal(err)
	}
	fedtest.EventuallyNil(t, 60*time.Second, "east's Istio objects for west removed", func() error {
		return writtenObjects(ctx, k, ic)
	})
	fedtest.EventuallyNil(t, 30*time.Second, "istiod without west's services", func() error {
		cds, err := clusters(ctx, conn, node)
		if err != nil {
			return err
		}
		if cds["outbound|80||"+coffeeHost] != nil {
			return errors.New("istiod still has coffee's cluster")
		}
		return nil
	})
}
