package istiod_test

import (
	"context"
	"crypto/x509"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	networkingpb "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/federate/federate/controlplane/istiod"
	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/kube"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
)

// startIstioCluster runs a kube-apiserver with the Istio kinds the writer
// and istiod use, and the namespaces shop and federate-system.
func startIstioCluster(t *testing.T, name string) (*kubetest.Cluster, istioclient.Interface) {
	t.Helper()
	c := kubetest.Start(t, name)[0]
	c.InstallCRDs(t)
	c.ApplyFiles(t, filepath.Join("testdata", "istio-crds.yaml"))
	c.WaitForResource(t, "networking.istio.io/v1", "serviceentries")
	c.EnsureNamespace(t, "shop", nil)
	c.EnsureNamespace(t, istiod.DefaultNamespace, nil)
	ic, err := istioclient.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	return c, ic
}

func endpoint(zone, version string, health registrypb.Health, weight uint32) *registry.Endpoint {
	return &registry.Endpoint{
		Address: "10.1.0.1", Ports: map[string]uint32{"http": 8080}, Health: health, Weight: weight,
		Locality: &registry.Locality{Region: "eu", Zone: zone}, Labels: map[string]string{"app": "coffee", "version": version},
		SpiffeId: "spiffe://west.shop/ns/shop/sa/coffee",
	}
}

func shopService(name, ns string, eps ...*registry.Endpoint) *registry.Service {
	return &registry.Service{
		Hostname: name + "." + ns + ".svc.cluster.local", Namespace: ns, Name: name,
		Ports:     []*registry.Port{{Name: "http", Number: 80, Protocol: "HTTP"}, {Name: "grpc", Number: 9090, Protocol: "GRPC"}},
		Endpoints: eps,
	}
}

// The writer turns the remote clusters into gateway Services, ServiceEntries
// and WorkloadEntries istiod reads; it follows changes, removes what a
// departed service or cluster needed, and never touches an object that is
// not its own.
func TestIntegrationWriterFollowsRemotes(t *testing.T) {
	t.Parallel()
	c, ic := startIstioCluster(t, "east")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Objects of others: a ServiceEntry with the name the writer would use,
	// and a VM's WorkloadEntry that federate's Kubernetes source manages.
	foreign := &networkingv1.ServiceEntry{ObjectMeta: metav1.ObjectMeta{Name: istiod.ServiceEntryName("tea"), Namespace: "shop"}}
	foreign.Spec.Hosts = []string{"tea.example.com"}
	foreign.Spec.Ports = []*networkingpb.ServicePort{{Name: "http", Number: 80, Protocol: "HTTP"}}
	if _, err := ic.NetworkingV1().ServiceEntries("shop").Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vm := &networkingv1.WorkloadEntry{ObjectMeta: metav1.ObjectMeta{Name: "barista-10.0.3.7", Namespace: "shop", Labels: map[string]string{kube.ManagedByLabel: kube.ManagedBy}}}
	vm.Spec.Address = "10.0.3.7"
	if _, err := ic.NetworkingV1().WorkloadEntries("shop").Create(ctx, vm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	w, err := istiod.New(istiod.Config{Kube: c.Client, Istio: ic})
	if err != nil {
		t.Fatal(err)
	}
	west := istiod.Remote{
		Cluster:  "west",
		Gateways: []*registry.Gateway{{Address: "198.51.100.7", Port: 15443}},
		Services: []*registry.Service{
			shopService("coffee", "shop",
				endpoint("a", "v1", registrypb.Health_HEALTHY, 0), endpoint("a", "v1", registrypb.Health_HEALTHY, 3),
				endpoint("b", "v2", registrypb.Health_HEALTHY, 0), endpoint("b", "v2", registrypb.Health_UNHEALTHY, 0)),
			shopService("tea", "shop", endpoint("a", "v1", registrypb.Health_HEALTHY, 0)),
			shopService("invoice", "billing", endpoint("a", "v1", registrypb.Health_HEALTHY, 0)), // no billing here
		},
	}
	north := istiod.Remote{
		Cluster:  "north",
		Gateways: []*registry.Gateway{{Address: "gw.north.example", Port: 16443}},
		Services: []*registry.Service{shopService("coffee", "shop", endpoint("c", "v1", registrypb.Health_HEALTHY, 0))},
	}
	if err := w.Reconcile(ctx, []istiod.Remote{west, north}); err != nil {
		t.Fatal(err)
	}

	// Gateways: one Service per remote network, its address in the status.
	gw := getService(ctx, t, c, "federate-gateway-west")
	if gw.Labels[istiod.NetworkLabel] != "federate-west" || gw.Spec.Type != corev1.ServiceTypeLoadBalancer ||
		*gw.Spec.LoadBalancerClass != istiod.LoadBalancerClass || gw.Spec.Ports[0].Port != 15443 {
		t.Errorf("west's gateway Service: labels %v, spec %+v", gw.Labels, gw.Spec)
	}
	if in := gw.Status.LoadBalancer.Ingress; len(in) != 1 || in[0].IP != "198.51.100.7" || *in[0].IPMode != corev1.LoadBalancerIPModeProxy {
		t.Errorf("west's gateway address: %+v", in)
	}
	gw = getService(ctx, t, c, "federate-gateway-north")
	if gw.Labels[istiod.GatewayPortLabel] != "16443" || gw.Status.LoadBalancer.Ingress[0].Hostname != "gw.north.example" {
		t.Errorf("north's gateway Service: labels %v, status %+v", gw.Labels, gw.Status)
	}

	// The imported service: one ServiceEntry for both clusters.
	se, err := ic.NetworkingV1().ServiceEntries("shop").Get(ctx, "federate-coffee", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if se.Spec.Location != networkingpb.ServiceEntry_MESH_INTERNAL || se.Spec.Resolution != networkingpb.ServiceEntry_STATIC ||
		!slices.Equal(se.Spec.Hosts, []string{"coffee.shop.svc.cluster.local"}) || len(se.Spec.Ports) != 2 ||
		se.Spec.WorkloadSelector.Labels[istiod.ServiceLabel] != "coffee" ||
		!slices.Equal(se.Spec.SubjectAltNames, []string{"spiffe://west.shop/ns/shop/sa/coffee"}) {
		t.Errorf("coffee's ServiceEntry: %v", &se.Spec)
	}
	// WorkloadEntries: one per (cluster, locality, labels), weighted by the
	// healthy endpoints, on the cluster's network, without an address.
	want := map[string]uint32{"west eu/a v1": 4, "west eu/b v2": 1, "north eu/c v1": 1}
	if got := workloadEntries(ctx, t, ic, "coffee"); !mapsEqual(got, want) {
		t.Errorf("coffee's WorkloadEntries: got %v, want %v", got, want)
	}
	if _, err := ic.NetworkingV1().ServiceEntries("billing").Get(ctx, "federate-invoice", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("invoice's ServiceEntry in a namespace this cluster lacks: %v", err)
	}
	assertUntouched(ctx, t, ic, foreign)

	// north leaves, coffee scales in west: its entries follow.
	west.Services[0].Endpoints = west.Services[0].Endpoints[2:]
	if err := w.Reconcile(ctx, []istiod.Remote{west}); err != nil {
		t.Fatal(err)
	}
	if got, want := workloadEntries(ctx, t, ic, "coffee"), map[string]uint32{"west eu/b v2": 1}; !mapsEqual(got, want) {
		t.Errorf("after north left: got %v, want %v", got, want)
	}
	if _, err := c.Client.CoreV1().Services(istiod.DefaultNamespace).Get(ctx, "federate-gateway-north", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("north's gateway Service after north left: %v", err)
	}

	// West leaves too: nothing of the writer's is left, the others' objects are.
	if err := w.Reconcile(ctx, nil); err != nil {
		t.Fatal(err)
	}
	list := metav1.ListOptions{LabelSelector: istiod.WrittenForLabel}
	ses, _ := ic.NetworkingV1().ServiceEntries("").List(ctx, list)
	wes, _ := ic.NetworkingV1().WorkloadEntries("").List(ctx, list)
	svcs, _ := c.Client.CoreV1().Services("").List(ctx, list)
	if len(ses.Items)+len(wes.Items)+len(svcs.Items) != 0 {
		t.Errorf("left after every cluster left: %d ServiceEntries, %d WorkloadEntries, %d Services", len(ses.Items), len(wes.Items), len(svcs.Items))
	}
	assertUntouched(ctx, t, ic, foreign)
	if _, err := ic.NetworkingV1().WorkloadEntries("shop").Get(ctx, vm.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("the VM's WorkloadEntry: %v", err)
	}
}

func getService(ctx context.Context, t *testing.T, c *kubetest.Cluster, name string) *corev1.Service {
	t.Helper()
	s, err := c.Client.CoreV1().Services(istiod.DefaultNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// workloadEntries summarises a service's WorkloadEntries as
// "cluster locality version" -> weight, and checks what every one carries.
func workloadEntries(ctx context.Context, t *testing.T, ic istioclient.Interface, service string) map[string]uint32 {
	t.Helper()
	list, err := ic.NetworkingV1().WorkloadEntries("shop").List(ctx, metav1.ListOptions{LabelSelector: istiod.ServiceLabel + "=" + service})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint32{}
	for _, we := range list.Items {
		cluster := we.Spec.Labels[istiod.ClusterLabel]
		if we.Spec.Address != "" || we.Spec.Network != istiod.Network(cluster) || we.Spec.Labels["security.istio.io/tlsMode"] != "istio" ||
			we.Labels[kube.ManagedByLabel] != kube.ManagedBy {
			t.Errorf("WorkloadEntry %s: labels %v, spec %v", we.Name, we.Labels, &we.Spec)
		}
		out[cluster+" "+we.Spec.Locality+" "+we.Spec.Labels["version"]] = we.Spec.Weight
	}
	return out
}

func mapsEqual(a, b map[string]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func assertUntouched(ctx context.Context, t *testing.T, ic istioclient.Interface, want *networkingv1.ServiceEntry) {
	t.Helper()
	got, err := ic.NetworkingV1().ServiceEntries(want.Namespace).Get(ctx, want.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the foreign ServiceEntry: %v", err)
	}
	if len(got.Labels) != 0 || !slices.Equal(got.Spec.Hosts, want.Spec.Hosts) {
		t.Errorf("the foreign ServiceEntry was changed: labels %v, hosts %v", got.Labels, got.Spec.Hosts)
	}
}

// The trust check accepts istiod's root when it is federate's, refuses
// another with what to do, and waits while istiod has published none.
func TestIntegrationTrustCheck(t *testing.T) {
	t.Parallel()
	c, ic := startIstioCluster(t, "east")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := istiod.New(istiod.Config{Kube: c.Client, Istio: ic})
	if err != nil {
		t.Fatal(err)
	}
	shared, _ := trust.NewCA(spiffeid.RequireTrustDomainFromString("shop"), time.Now())
	other, _ := trust.NewCA(spiffeid.RequireTrustDomainFromString("cluster.local"), time.Now())
	if err := w.CheckTrust(ctx, []*x509.Certificate{shared.Cert}); err != nil {
		t.Errorf("before istiod published a root: %v", err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: istiod.RootConfigMap, Namespace: istiod.DefaultNamespace},
		Data:       map[string]string{istiod.RootConfigMapKey: string(trust.EncodeCertificates(shared.Cert))},
	}
	if _, err := c.Client.CoreV1().ConfigMaps(istiod.DefaultNamespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w.CheckTrust(ctx, []*x509.Certificate{other.Cert, shared.Cert}); err != nil {
		t.Errorf("shared root: %v", err)
	}
	err = w.CheckTrust(ctx, []*x509.Certificate{other.Cert})
	if !errors.Is(err, istiod.ErrTrustMismatch) || !strings.Contains(err.Error(), "--cacerts") {
		t.Errorf("istiod on another root: %v", err)
	}
}
