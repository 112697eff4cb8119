package kube_test

import (
	"slices"
	"testing"
	"time"

	networkingpb "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/registry/kube"
)

// What a cluster's Istio objects name to import follows Istio's rules on
// a real API server: without Sidecars, every Service and ServiceEntry a
// namespace sees (exportTo "~" hides one; federate's own objects and the
// API server's Service name nothing); the root namespace's Sidecar applies
// to every namespace, "." being each; a namespace's own Sidecar replaces
// it, its hostnames imported as named (pending if nobody exports them) and
// its wildcards matched against what is declared here. The hostnames are
// listed at start and reported as they change.
func TestIntegrationIstioObjectsNameImports(t *testing.T) {
	t.Parallel()
	kc := kubetest.Start(t, "east")[0]
	kc.InstallCRDs(t)
	for _, ns := range []string{"web", "shop", kube.IstioRootNamespace} {
		kc.EnsureNamespace(t, ns, nil)
	}
	ctx := ctxT(t)
	kcs, err := kubernetes.NewForConfig(kc.Config)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := istioclient.NewForConfig(kc.Config)
	if err != nil {
		t.Fatal(err)
	}
	service := func(name string, labels, annotations map[string]string) {
		t.Helper()
		_, err := kcs.CoreV1().Services("shop").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: labels, Annotations: annotations},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 9080}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	service("reviews", nil, nil)
	service("ratings", nil, map[string]string{kube.ExportToAnnotation: "~"})
	service("eastwest-west", map[string]string{kube.ManagedByLabel: kube.ManagedBy}, nil)
	_, err = ic.NetworkingV1().ServiceEntries("shop").Create(ctx, &networkingv1.ServiceEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "partner", Namespace: "shop"},
		Spec: networkingpb.ServiceEntry{Hosts: []string{"api.partner.example"}, ExportTo: []string{"web"},
			Ports: []*networkingpb.ServicePort{{Number: 443, Name: "tls", Protocol: "TLS"}}, Resolution: networkingpb.ServiceEntry_DNS},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sidecar := func(ns string, hosts ...string) {
		t.Helper()
		_, err := ic.NetworkingV1().Sidecars(ns).Create(ctx, &networkingv1.Sidecar{
			ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns},
			Spec:       networkingpb.Sidecar{Egress: []*networkingpb.IstioEgressListener{{Hosts: hosts}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}

	const reviews, cart, partner = "reviews.shop.svc.cluster.local", "cart.shop.svc.cluster.local", "api.partner.example"
	got, err := kube.IstioImports(ctx, kc.Config, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{partner, reviews}; !slices.Equal(got, want) {
		t.Fatalf("IstioImports without Sidecars = %v, want %v", got, want)
	}

	var reported reportedHosts
	runSource(ctx, t, kube.Config{
		Cluster: "east", Kube: kc.Config, Network: "net-east", TrustDomain: "east.shop", Logger: testLogger(t),
		OnIstioImports: reported.set,
	})
	eventually(t, 30*time.Second, reported.are(partner, reviews))
	// The root Sidecar: each namespace reaches its own services only; the
	// partner's ServiceEntry is exported to web, which has none of shop's.
	sidecar(kube.IstioRootNamespace, "./*")
	eventually(t, 30*time.Second, reported.are(reviews))
	// web's own Sidecar: cart by name, and shop's services web sees.
	sidecar("web", "*/"+cart, "shop/*")
	eventually(t, 30*time.Second, reported.are(partner, cart, reviews))
	if err := ic.NetworkingV1().Sidecars("web").Delete(ctx, "default", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, reported.are(reviews))
	got, err = kube.IstioImports(ctx, kc.Config, "")
	if err != nil || !slices.Equal(got, []string{reviews}) {
		t.Fatalf("IstioImports with the root Sidecar = %v, %v; want %v", got, err, []string{reviews})
	}
}
