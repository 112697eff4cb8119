package kube_test

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/registry/kube"
)

// The ServiceImports that federate does not manage are requests: the
// hostnames they name are listed at start and reported as they change;
// those federate manages are not.
func TestIntegrationServiceImportsRequestServices(t *testing.T) {
	t.Parallel()
	kc := kubetest.Start(t, "east")[0]
	kc.InstallCRDs(t)
	kc.EnsureNamespace(t, "shop", nil)
	ctx := ctxT(t)
	mcs, err := mcsclient.NewForConfig(kc.Config)
	if err != nil {
		t.Fatal(err)
	}
	create := func(name string, labels map[string]string) {
		t.Helper()
		_, err := mcs.MulticlusterV1beta1().ServiceImports("shop").Create(ctx, &mcsv1beta1.ServiceImport{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: labels},
			Spec:       mcsv1beta1.ServiceImportSpec{Type: mcsv1beta1.ClusterSetIP, Ports: []mcsv1beta1.ServicePort{{Port: 80}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	create("reviews", nil)
	create("ratings", map[string]string{kube.ManagedByLabel: kube.ManagedBy})
	got, err := kube.RequestedImports(ctx, kc.Config, "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"reviews.shop.svc.cluster.local"}; !slices.Equal(got, want) {
		t.Fatalf("RequestedImports = %v, want %v", got, want)
	}

	var reported reportedHosts
	runSource(ctx, t, kube.Config{
		Cluster: "east", Kube: kc.Config, Network: "net-east", TrustDomain: "east.shop", Logger: testLogger(t),
		OnRequestedImports: reported.set,
	})
	eventually(t, 30*time.Second, reported.are("reviews.shop.svc.cluster.local"))
	create("details", nil)
	eventually(t, 30*time.Second, reported.are("details.shop.svc.cluster.local", "reviews.shop.svc.cluster.local"))
	if err := mcs.MulticlusterV1beta1().ServiceImports("shop").Delete(ctx, "reviews", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, reported.are("details.shop.svc.cluster.local"))
}
