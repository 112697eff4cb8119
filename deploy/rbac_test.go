package deploy

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	networkingpb "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	mcsv1beta1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"

	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/kube"
)

// syncBuffer is a log sink the source writes from its own goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The control plane's ServiceAccount, bound by deploy/controlplane's RBAC,
// can do everything registry/kube does, and is refused what it must not do.
func TestIntegrationControlPlaneRBAC(t *testing.T) {
	c := kubetest.Start(t, "rbac")[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c.InstallCRDs(t)
	if err := kubetest.Apply(ctx, c.Config, render(t, "controlplane"), false); err != nil {
		t.Fatal(err)
	}
	hostIP := kubetest.HostIP(t)
	token := c.ServiceAccountToken(t, "federate-system", "federate-controlplane")
	asSA := c.ConfigWithToken(token)

	// The user's objects, created by an administrator.
	c.EnsureNamespace(t, "shop", nil)
	admin := c.Client
	mustCreate := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := admin.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "order", Namespace: "shop"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}, Selector: map[string]string{"app": "order"}},
	}, metav1.CreateOptions{})
	mustCreate(err)
	mcsAdmin, err := mcsclient.NewForConfig(c.Config)
	mustCreate(err)
	_, err = mcsAdmin.MulticlusterV1beta1().ServiceExports("shop").Create(ctx, &mcsv1beta1.ServiceExport{
		ObjectMeta: metav1.ObjectMeta{Name: "order", Namespace: "shop"},
	}, metav1.CreateOptions{})
	mustCreate(err)
	istioAdmin, err := istioclient.NewForConfig(c.Config)
	mustCreate(err)
	_, err = istioAdmin.NetworkingV1().WorkloadGroups("shop").Create(ctx, &networkingv1.WorkloadGroup{
		ObjectMeta: metav1.ObjectMeta{Name: "order-vm", Namespace: "shop"},
		Spec:       networkingpb.WorkloadGroup{Template: &networkingpb.WorkloadEntry{ServiceAccount: "order"}},
	}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = admin.CoreV1().Secrets("federate-system").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "federate-membership", Namespace: "federate-system"},
		Data:       map[string][]byte{"credential.pem": []byte("x")},
	}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = admin.CoreV1().Secrets("federate-system").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "someone-elses", Namespace: "federate-system"},
	}, metav1.CreateOptions{})
	mustCreate(err)

	// What it needs: the whole source, run as the ServiceAccount.
	var logs syncBuffer
	src, err := kube.New(kube.Config{
		Cluster: "rbac", Kube: asSA, Network: "net-rbac", TrustDomain: "rbac.shop", Retry: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	mustCreate(err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	published := make(chan []*registry.Service, 16)
	go func() {
		done <- src.Run(runCtx, func(s []*registry.Service) {
			select {
			case published <- s:
			default:
			}
		})
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("source as the ServiceAccount: %v", err)
		}
	}()
	select {
	case <-src.Synced():
	case err := <-done:
		t.Fatalf("source as the ServiceAccount: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the source did not sync as the ServiceAccount")
	}
	src.SetRemote([]kube.RemoteCluster{{
		Name: "west", Network: "net-west",
		Gateways: []*registry.Gateway{{Address: hostIP, Port: 15443}},
		Services: []*registry.Service{{Hostname: "menu.shop.svc.cluster.local", Namespace: "shop", Name: "menu", Ports: []*registry.Port{{Name: "http", Number: 80}}}},
	}})
	if _, err := src.RegisterWorkload(ctx, kube.Workload{Namespace: "shop", Group: "order-vm", Address: "10.1.2.3"}); err != nil {
		t.Fatalf("register a VM as the ServiceAccount: %v", err)
	}
	if err := src.SetWorkloadHealth(ctx, kube.Workload{Namespace: "shop", Group: "order-vm", Address: "10.1.2.3"}, false, "probe failed"); err != nil {
		t.Fatalf("write a VM's health as the ServiceAccount: %v", err)
	}
	if vms, err := src.RegisteredWorkloads(ctx); err != nil || len(vms) != 1 || vms[0].Address != "10.1.2.3" {
		t.Fatalf("list the VMs' WorkloadEntries as the ServiceAccount: %v, %v", vms, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		exp, err := mcsAdmin.MulticlusterV1beta1().ServiceExports("shop").Get(ctx, "order", metav1.GetOptions{})
		_, ierr := mcsAdmin.MulticlusterV1beta1().ServiceImports("shop").Get(ctx, "menu", metav1.GetOptions{})
		_, serr := admin.DiscoveryV1().EndpointSlices("shop").Get(ctx, kube.ImportSliceName("menu", "west"), metav1.GetOptions{})
		if err == nil && meta.IsStatusConditionTrue(exp.Status.Conditions, string(mcsv1beta1.ServiceExportConditionValid)) && ierr == nil && serr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("as the ServiceAccount: export status %v, import %v, slice %v; logs:\n%s", exp.Status.Conditions, ierr, serr, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(logs.String(), "forbidden") {
		t.Errorf("the source was refused something it needs:\n%s", logs.String())
	}
	sa, err := kubernetes.NewForConfig(asSA)
	mustCreate(err)
	sec, err := sa.CoreV1().Secrets("federate-system").Get(ctx, "federate-membership", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("read the membership Secret: %v", err)
	}
	sec.Data["credential.pem"] = []byte("renewed")
	if _, err := sa.CoreV1().Secrets("federate-system").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("save a renewed credential: %v", err)
	}

	// The leader keeps the gateway's Secret: creates it, reads and
	// rewrites it.
	gw := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "federate-gateway"}, Data: map[string][]byte{"gateway.pem": []byte("first"), "ca.pem": []byte("ca")}}
	if _, err := sa.CoreV1().Secrets("federate-system").Create(ctx, gw, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the gateway Secret: %v", err)
	}
	if gw, err = sa.CoreV1().Secrets("federate-system").Get(ctx, "federate-gateway", metav1.GetOptions{}); err != nil {
		t.Fatalf("read the gateway Secret: %v", err)
	}
	gw.Data["gateway.pem"] = []byte("renewed")
	if _, err := sa.CoreV1().Secrets("federate-system").Update(ctx, gw, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("rewrite the gateway Secret: %v", err)
	}
	gwOnly := metav1.ListOptions{FieldSelector: "metadata.name=federate-gateway"}
	if _, err := sa.CoreV1().Secrets("federate-system").List(ctx, gwOnly); err != nil {
		t.Fatalf("list the gateway Secret by name: %v", err)
	}
	w, err := sa.CoreV1().Secrets("federate-system").Watch(ctx, gwOnly)
	if err != nil {
		t.Fatalf("watch the gateway Secret: %v", err)
	}
	w.Stop()

	// Leader election: its Lease, and a leader or standby label on its own
	// Pod, in its namespace.
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "federate-controlplane", Namespace: "federate-system"}}
	if lease, err = sa.CoordinationV1().Leases("federate-system").Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the leader Lease: %v", err)
	}
	if _, err := sa.CoordinationV1().Leases("federate-system").Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("renew the leader Lease: %v", err)
	}
	_, err = admin.CoreV1().Pods("federate-system").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "federate-controlplane-0"},
		Spec: corev1.PodSpec{ServiceAccountName: "federate-controlplane", AutomountServiceAccountToken: new(false),
			Containers: []corev1.Container{{Name: "controlplane", Image: "federate"}}},
	}, metav1.CreateOptions{})
	mustCreate(err)
	if _, err := sa.CoreV1().Pods("federate-system").Patch(ctx, "federate-controlplane-0", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"federate.io/role":"leader"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("label its Pod leader: %v", err)
	}

	// And no more.
	mcsSA, err := mcsclient.NewForConfig(asSA)
	mustCreate(err)
	istioSA, err := istioclient.NewForConfig(asSA)
	mustCreate(err)
	denied := map[string]error{}
	_, denied["read another Secret"] = sa.CoreV1().Secrets("federate-system").Get(ctx, "someone-elses", metav1.GetOptions{})
	_, denied["list Secrets"] = sa.CoreV1().Secrets("federate-system").List(ctx, metav1.ListOptions{})
	_, denied["watch Secrets"] = sa.CoreV1().Secrets("federate-system").Watch(ctx, metav1.ListOptions{})
	_, denied["watch the membership Secret"] = sa.CoreV1().Secrets("federate-system").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=federate-membership"})
	_, denied["read Secrets elsewhere"] = sa.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	// Create cannot be limited by name: the Role allows it in its own
	// namespace only.
	_, denied["create a Secret elsewhere"] = sa.CoreV1().Secrets("kube-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "new"}}, metav1.CreateOptions{})
	_, denied["rewrite another Secret"] = sa.CoreV1().Secrets("federate-system").Update(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "someone-elses"}, Data: map[string][]byte{"x": []byte("y")}}, metav1.UpdateOptions{})
	denied["delete the gateway Secret"] = sa.CoreV1().Secrets("federate-system").Delete(ctx, "federate-gateway", metav1.DeleteOptions{})
	denied["delete the membership Secret"] = sa.CoreV1().Secrets("federate-system").Delete(ctx, "federate-membership", metav1.DeleteOptions{})
	_, denied["create a Service"] = sa.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "evil"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 1}}},
	}, metav1.CreateOptions{})
	denied["delete a Service"] = sa.CoreV1().Services("shop").Delete(ctx, "order", metav1.DeleteOptions{})
	denied["delete a Namespace"] = sa.CoreV1().Namespaces().Delete(ctx, "shop", metav1.DeleteOptions{})
	_, denied["list Pods"] = sa.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{})
	_, denied["take a Lease elsewhere"] = sa.CoordinationV1().Leases("shop").Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
	_, denied["create a Pod"] = sa.CoreV1().Pods("federate-system").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}},
	}, metav1.CreateOptions{})
	_, denied["list ConfigMaps"] = sa.CoreV1().ConfigMaps("federate-system").List(ctx, metav1.ListOptions{})
	denied["delete a ServiceExport"] = mcsSA.MulticlusterV1beta1().ServiceExports("shop").Delete(ctx, "order", metav1.DeleteOptions{})
	_, denied["create a ServiceExport"] = mcsSA.MulticlusterV1beta1().ServiceExports("shop").Create(ctx, &mcsv1beta1.ServiceExport{
		ObjectMeta: metav1.ObjectMeta{Name: "sneaky"},
	}, metav1.CreateOptions{})
	if exp, err := mcsSA.MulticlusterV1beta1().ServiceExports("shop").Get(ctx, "order", metav1.GetOptions{}); err == nil {
		exp.Labels = map[string]string{"changed": "true"}
		_, denied["change a ServiceExport's spec"] = mcsSA.MulticlusterV1beta1().ServiceExports("shop").Update(ctx, exp, metav1.UpdateOptions{})
	}
	_, denied["grant itself a role"] = sa.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "escalate"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "federate-controlplane", Namespace: "federate-system"}},
	}, metav1.CreateOptions{})
	_, denied["update a WorkloadGroup"] = istioSA.NetworkingV1().WorkloadGroups("shop").Update(ctx, &networkingv1.WorkloadGroup{
		ObjectMeta: metav1.ObjectMeta{Name: "order-vm", Namespace: "shop"},
	}, metav1.UpdateOptions{})
	for what, err := range denied {
		if !apierrors.IsForbidden(err) {
			t.Errorf("the control plane's ServiceAccount can %s (got %v, want Forbidden)", what, err)
		}
	}
}
