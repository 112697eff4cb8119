package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	networkingpb "istio.io/api/networking/v1"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/controlplane/workloads"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/registry/kube"
)

// Connected VM agents get WorkloadEntries in the cluster's API, at their
// sidecar's inbound port, with their probe's result as the Healthy
// condition, and lose them when they leave; so do those restored after a
// restart, until their grace period ends; disconnected ones have none.
// Objects that an earlier control plane wrote go after the grace period
// unless their agents connected.
func TestIntegrationKubeMirrorsVMEntries(t *testing.T) {
	t.Parallel()
	c := kubetest.Start(t, "east")[0]
	c.InstallCRDs(t)
	c.EnsureNamespace(t, "shop", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	istio, err := istioclient.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	_, err = istio.NetworkingV1().WorkloadGroups("shop").Create(ctx, &networkingv1.WorkloadGroup{
		ObjectMeta: metav1.ObjectMeta{Name: "barista", Namespace: "shop"},
		Spec: networkingpb.WorkloadGroup{
			Metadata: &networkingpb.WorkloadGroup_ObjectMeta{Labels: map[string]string{"app": "barista"}},
			Template: &networkingpb.WorkloadEntry{ServiceAccount: "barista"},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	src, err := kube.New(kube.Config{Cluster: "east", Kube: c.Config, Network: "net-east", TrustDomain: "east.shop"})
	if err != nil {
		t.Fatal(err)
	}
	// Left by an earlier control plane: the objects of a VM that connects
	// here and of one that does not. And one that istiod or a user wrote.
	for _, addr := range []string{"10.0.3.7", "10.0.3.8"} {
		if _, err := src.RegisterWorkload(ctx, kube.Workload{Namespace: "shop", Group: "barista", Address: addr}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = istio.NetworkingV1().WorkloadEntries("shop").Create(ctx, &networkingv1.WorkloadEntry{
		ObjectMeta: metav1.ObjectMeta{Name: "barista-by-hand", Namespace: "shop", Labels: map[string]string{"app": "barista"}},
		Spec:       networkingpb.WorkloadEntry{Address: "10.0.3.9"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const grace = 3 * time.Second
	entries := make(chan []workloads.EntryStatus, 1)
	mirrored := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(mirrored)
		controlplane.MirrorWorkloads(ctx, src, "east", entries, grace)
	}()
	defer func() { cancel(); <-mirrored }()

	entry := func() error {
		_, err := istio.NetworkingV1().WorkloadEntries("shop").Get(ctx, "barista-10.0.3.7", metav1.GetOptions{})
		return err
	}
	gone := func() error {
		if err := entry(); !apierrors.IsNotFound(err) {
			return errors.New("the WorkloadEntry is still there")
		}
		return nil
	}
	health := func(want string) func() error {
		return func() error {
			we, err := istio.NetworkingV1().WorkloadEntries("shop").Get(ctx, "barista-10.0.3.7", metav1.GetOptions{})
			if err != nil {
				return err
			}
			got := "none"
			for _, c := range we.Status.GetConditions() {
				if c.GetType() == kube.HealthCondition {
					got = c.GetStatus() + ": " + c.GetMessage()
				}
			}
			if got != want {
				return fmt.Errorf("Healthy condition %q, want %q", got, want)
			}
			return nil
		}
	}
	ports := func(want uint32) func() error {
		return func() error {
			we, err := istio.NetworkingV1().WorkloadEntries("shop").Get(ctx, "barista-10.0.3.7", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got := we.Spec.GetPorts(); len(got) != 1 || got["http"] != want || we.Spec.GetNetwork() != "net-vm" || we.Spec.GetLocality() != "eu/a" {
				return fmt.Errorf("ports %v, network %q, locality %q; want http at %d on net-vm in eu/a", got, we.Spec.GetNetwork(), we.Spec.GetLocality(), want)
			}
			return nil
		}
	}
	vm := workloads.EntryStatus{Namespace: "shop", Name: "barista-10.0.3.7", Group: "barista", Address: "10.0.3.7",
		Network: "net-vm", Locality: "eu/a", Connected: true, Healthy: true, Ports: map[string]uint32{"http": 15006}}
	entries <- []workloads.EntryStatus{vm}
	fedtest.EventuallyNil(t, 20*time.Second, "the VM's WorkloadEntry in the API, healthy", health("True: "))
	fedtest.EventuallyNil(t, 5*time.Second, "the WorkloadEntry names the sidecar's inbound port", ports(15006))
	// The earlier control plane's object goes once its grace period is
	// over; the one written by hand stays.
	fedtest.EventuallyNil(t, grace+20*time.Second, "the earlier control plane's WorkloadEntry deleted", func() error {
		if _, err := istio.NetworkingV1().WorkloadEntries("shop").Get(ctx, "barista-10.0.3.8", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return errors.New("it is still there")
		}
		return nil
	})
	if took := time.Since(start); took < grace {
		t.Errorf("the earlier control plane's WorkloadEntry was deleted %s after the start, before the %s grace period", took, grace)
	}
	if _, err := istio.NetworkingV1().WorkloadEntries("shop").Get(ctx, "barista-by-hand", metav1.GetOptions{}); err != nil {
		t.Errorf("the WorkloadEntry written by hand: %v", err)
	}
	if err := ports(15006)(); err != nil {
		t.Errorf("the connected VM's WorkloadEntry after the grace period: %v", err)
	}
	// The agent restarted, with its inbound listener elsewhere.
	vm.Ports = map[string]uint32{"http": 15007}
	entries <- []workloads.EntryStatus{vm}
	fedtest.EventuallyNil(t, 20*time.Second, "the WorkloadEntry names the new inbound port", ports(15007))
	fedtest.EventuallyNil(t, 5*time.Second, "the WorkloadEntry still healthy", health("True: "))
	vm.Healthy, vm.HealthMessage = false, "tcpSocket 127.0.0.1:8080: connection refused"
	entries <- []workloads.EntryStatus{vm}
	fedtest.EventuallyNil(t, 20*time.Second, "the VM's WorkloadEntry unhealthy", health("False: tcpSocket 127.0.0.1:8080: connection refused"))
	vm.Connected = false // disconnected, in its grace period
	entries <- []workloads.EntryStatus{vm}
	fedtest.EventuallyNil(t, 20*time.Second, "the WorkloadEntry gone after the agent left", gone)

	vm.Restored = true
	entries <- []workloads.EntryStatus{vm}
	fedtest.EventuallyNil(t, 20*time.Second, "the restored entry's WorkloadEntry in the API", entry)
	entries <- nil
	fedtest.EventuallyNil(t, 20*time.Second, "the WorkloadEntry gone after the restored entry's grace period", gone)
}
