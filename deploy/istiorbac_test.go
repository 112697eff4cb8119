package deploy

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/federate/federate/controlplane/istiod"
	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
)

// The control plane's ServiceAccount, bound by deploy/controlplane's RBAC
// and istio-rbac.yaml, can write and remove everything --istio-write
// writes, read istiod's root, and nothing more in the users' namespaces.
func TestIntegrationIstioWriteRBAC(t *testing.T) {
	c := kubetest.Start(t, "rbac")[0]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.InstallCRDs(t)
	c.ApplyFiles(t, filepath.Join("..", "controlplane", "istiod", "testdata", "istio-crds.yaml"))
	c.WaitForResource(t, "networking.istio.io/v1", "serviceentries")
	if err := kubetest.Apply(ctx, c.Config, render(t, "controlplane"), false); err != nil {
		t.Fatal(err)
	}
	extra, err := os.ReadFile(filepath.Join("controlplane", "istio-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := kubetest.Apply(ctx, c.Config, namespaced(t, extra), false); err != nil {
		t.Fatal(err)
	}
	c.EnsureNamespace(t, "shop", nil)
	asSA := c.ConfigWithToken(c.ServiceAccountToken(t, "federate-system", "federate-controlplane"))
	kc, err := kubernetes.NewForConfig(asSA)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := istioclient.NewForConfig(asSA)
	if err != nil {
		t.Fatal(err)
	}
	w, err := istiod.New(istiod.Config{Kube: kc, Istio: ic})
	if err != nil {
		t.Fatal(err)
	}
	coffee := &registry.Service{
		Hostname: "coffee.shop.svc.cluster.local", Namespace: "shop", Name: "coffee",
		Ports: []*registry.Port{{Name: "http", Number: 80, Protocol: "HTTP"}},
		Endpoints: []*registry.Endpoint{{Health: registrypb.Health_HEALTHY, Locality: &registry.Locality{Region: "eu", Zone: "a"},
			SpiffeId: "spiffe://west.shop/ns/shop/sa/coffee"}},
	}
	west := istiod.Remote{Cluster: "west", Gateways: []*registry.Gateway{{Address: "198.51.100.7", Port: 16443}}, Services: []*registry.Service{coffee}}
	if err := w.Reconcile(ctx, []istiod.Remote{west}); err != nil {
		t.Fatalf("write as the ServiceAccount: %v", err)
	}
	// A second pass updates (the gateway moved), then everything goes.
	west.Gateways[0].Address = "198.51.100.8"
	if err := w.Reconcile(ctx, []istiod.Remote{west}); err != nil {
		t.Fatalf("update as the ServiceAccount: %v", err)
	}
	if err := w.CheckTrust(ctx, nil); err != nil {
		t.Fatalf("before istiod published its root: %v", err)
	}
	_, err = c.Client.CoreV1().ConfigMaps("federate-system").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: istiod.RootConfigMap, Namespace: "federate-system"},
		Data:       map[string]string{istiod.RootConfigMapKey: "not a certificate"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.CheckTrust(ctx, nil); err == nil || apierrors.IsForbidden(err) {
		t.Errorf("reading istiod's root as the ServiceAccount: %v (want a parse error, not a refusal)", err)
	}
	if err := w.Reconcile(ctx, nil); err != nil {
		t.Fatalf("remove as the ServiceAccount: %v", err)
	}
	// Not granted: Services in the users' namespaces.
	_, err = kc.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "sneaky", Namespace: "shop"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("creating a Service in shop as the ServiceAccount: %v, want forbidden", err)
	}
}

// namespaced puts the namespaced objects of a manifest without a namespace
// into federate-system, as 'kubectl apply -n federate-system' does.
func namespaced(t *testing.T, data []byte) []byte {
	t.Helper()
	objs, err := kubetest.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, o := range objs {
		if o.GetKind() == "Role" || o.GetKind() == "RoleBinding" {
			o.SetNamespace("federate-system")
		}
		b, err := o.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		out = append(append(out, b...), []byte("\n---\n")...)
	}
	return out
}
