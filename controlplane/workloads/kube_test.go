package workloads_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	networkingpb "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/xds"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// On a Kubernetes control plane a VM joins the Services whose selector
// picks its labels, as it joins ServiceEntries on a file one: the
// federation reaches it once, at its sidecar's inbound listener, the
// sidecar serves the Service's port, and the WorkloadEntry the control
// plane writes names that listener too, for istiod and for a control
// plane that does not know the entry yet. The sidecar forwards to the
// Service's targetPort, as Istio does for a WorkloadEntry without ports.
func TestIntegrationKubeVMServesItsService(t *testing.T) {
	t.Parallel()
	buildBinaries()
	k := kubetest.Start(t, "central")[0]
	k.InstallCRDs(t)
	for _, ns := range []string{controlplane.DefaultKubeNamespace, "shop"} {
		k.EnsureNamespace(t, ns, nil)
	}
	ctx := fedtest.DeadlineContext(t, 3*time.Minute)

	// The VM's application, and its group in the cluster's API.
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, app, "barista: ", nil)
	appPort := app.Addr().(*net.TCPAddr).Port
	ic, err := istioclient.NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ic.NetworkingV1().WorkloadGroups("shop").Create(ctx, &networkingv1.WorkloadGroup{
		ObjectMeta: metav1.ObjectMeta{Name: "barista", Namespace: "shop"},
		Spec: networkingpb.WorkloadGroup{
			Metadata: &networkingpb.WorkloadGroup_ObjectMeta{Labels: map[string]string{"app": "barista"}},
			Template: &networkingpb.WorkloadEntry{ServiceAccount: "barista"},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The exported Service that selects it, with no Pods: the VM gets
	// its port at its target port.
	_, err = k.Client.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "barista", Namespace: "shop"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "barista"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 8083, TargetPort: intstr.FromInt(appPort)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mcs, err := mcsclient.NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	_, err = mcs.MulticlusterV1beta1().ServiceExports("shop").Create(ctx, &mcsv1beta1.ServiceExport{
		ObjectMeta: metav1.ObjectMeta{Name: "barista", Namespace: "shop"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	tm := fedtest.NewMesh(t, testTimers)
	central := startVMCluster(t, tm, "central", 2*time.Second, time.Minute, func(c *controlplane.Config) {
		ms, err := membership.LoadMembership(filepath.Join(tm.Dir, "central"))
		if err != nil {
			t.Fatal(err)
		}
		kube := &controlplane.Kube{Config: k.Config, Client: k.Client, Namespace: controlplane.DefaultKubeNamespace, Secret: controlplane.DefaultMembershipSecret}
		if err := kube.SaveMembership(ctx, ms); err != nil {
			t.Fatal(err)
		}
		c.Kube, c.ConfigDir = kube, ""
	})
	tm.Join("east")
	east := tm.StartControlPlane("east", controlplane.Config{Gateway: "192.0.2.10:15443", Source: fedtest.NewSource()}).Member()

	dir := t.TempDir()
	federate, agentBin := binaries(t)
	group := `apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: barista, namespace: shop}
spec:
  metadata:
    labels: {app: barista}
  template:
    serviceAccount: barista
`
	if out, err := central.configure(t, tm, federate, group, dir, time.Minute); err != nil {
		t.Fatalf("vm configure: %v\n%s", err, out)
	}
	writeSidecar(t, dir, "inbound: {listen: 127.0.0.1:0}\n")
	startAgent(t, agentBin, dir, t.TempDir())

	// The WorkloadEntry names the sidecar's inbound listener.
	var inbound uint32
	fedtest.Eventually(t, 20*time.Second, "the VM's WorkloadEntry, naming its sidecar's inbound port", func() bool {
		we, err := ic.NetworkingV1().WorkloadEntries("shop").Get(ctx, "barista-127.0.0.1", metav1.GetOptions{})
		if err != nil {
			return false
		}
		inbound = we.Spec.GetPorts()["http"]
		return inbound != 0 && inbound != uint32(appPort)
	})
	// East sees the VM once, there.
	var found []*registry.Endpoint
	fedtest.EventuallyNil(t, 30*time.Second, "east sees the VM once, healthy, at its sidecar's inbound port", func() error {
		found = found[:0]
		for _, s := range east.Services("central") {
			if s.GetHostname() != "barista.shop.svc.cluster.local" {
				continue
			}
			for _, ep := range s.GetEndpoints() {
				if ep.GetAddress() == "127.0.0.1" {
					found = append(found, ep)
				}
			}
		}
		if len(found) != 1 || found[0].GetHealth() != registrypb.Health_HEALTHY || found[0].GetPorts()["http"] != inbound {
			var seen []string
			for _, ep := range found {
				seen = append(seen, fmt.Sprintf("%s %v %s on %q", ep.GetAddress(), ep.GetPorts(), ep.GetHealth(), ep.GetNetwork()))
			}
			return fmt.Errorf("east sees %d endpoints at 127.0.0.1: %v", len(found), seen)
		}
		return nil
	})
	if got := found[0].GetSpiffeId(); got != "spiffe://central.shop/ns/shop/sa/barista" {
		t.Errorf("the VM's endpoint has SPIFFE ID %s", got)
	}

	// A workload of east calls the VM through central's gateway; its
	// sidecar forwards the Service's port to the application.
	cred, err := east.Authority().IssueCredential(spiffeid.RequireFromString("spiffe://east.shop/ns/shop/sa/order"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conf := tlsconfig.MTLSClientConfig(cred, east.Bundles(), tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/barista")))
	conf.ServerName = xds.ClusterName(8083, "", "barista.shop.svc.cluster.local")
	var answer string
	fedtest.Eventually(t, 10*time.Second, "east's call to the VM", func() bool {
		c, err := tls.Dial("tcp", central.gwAddr, conf)
		if err != nil {
			return false
		}
		answer, err = say(c, "one cortado")
		return err == nil
	})
	if answer != "barista: one cortado\n" {
		t.Errorf("the VM answered %q", answer)
	}
	t.Logf("the VM's application listens on %d, its sidecar's inbound listener on %d", appPort, inbound)
}
