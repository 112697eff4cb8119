package controlplane_test

import (
	"slices"
	"testing"
	"time"

	networkingpb "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/kubetest"
)

// With ImportIstio, a Kubernetes cluster imports what its Istio objects
// name: web's Sidecar names cart; once a Service order is declared in
// shop (as Istio's multicluster DNS wants), the namespaces without a
// Sidecar see it and it is imported too; east's payment, named nowhere,
// never is.
func TestIntegrationKubeImportsWhatIstioNames(t *testing.T) {
	t.Parallel()
	k := kubetest.Start(t, "west")[0]
	k.InstallCRDs(t)
	ns := controlplane.DefaultKubeNamespace
	for _, n := range []string{ns, "shop", "web"} {
		k.EnsureNamespace(t, n, nil)
	}
	ctx := fedtest.DeadlineContext(t, 3*time.Minute)
	ic, err := istioclient.NewForConfig(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ic.NetworkingV1().Sidecars("web").Create(ctx, &networkingv1.Sidecar{
		ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "web"},
		Spec:       networkingpb.Sidecar{Egress: []*networkingpb.IstioEgressListener{{Hosts: []string{"*/cart.shop.svc.cluster.local"}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	tm := fedtest.NewMesh(t, testTimers)
	t.Cleanup(tm.StopMembers)
	startEastServingCoffee(tm)
	tm.Join("west")
	kube, _ := saveMembership(ctx, t, tm, k, ns, "west")
	west := tm.StartControlPlane("west", controlplane.Config{Gateway: "192.0.2.10:15443", Kube: kube, ImportIstio: true})
	holds := func(want ...string) func() bool {
		return func() bool {
			var got []string
			for _, s := range west.Member().Services("east") {
				got = append(got, s.GetName())
			}
			slices.Sort(got)
			return slices.Equal(got, want)
		}
	}
	fedtest.Eventually(t, 30*time.Second, "west to import cart, as web's Sidecar names", holds("cart"))

	_, err = k.Client.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "order", Namespace: "shop"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 30*time.Second, "west to import order too, once declared", holds("cart", "order"))
}
