package controlplane_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	clientretry "k8s.io/client-go/util/retry"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/kubetest"
	"github.com/federate/federate/registry"
)

// replica is one of a cluster's control plane replicas, run by a test.
type replica struct {
	name   string
	cp     *controlplane.ControlPlane
	source *fedtest.Source
	stop   context.CancelFunc
	done   chan struct{} // closed when Run returned err
	err    error
}

// wait waits until Run returned, and returns its error.
func (r *replica) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(30 * time.Second):
		t.Fatalf("replica %s did not stop", r.name)
		return nil
	}
}

// Two replicas of one cluster's control plane: exactly one leads and
// publishes, the other stands by, Ready but labelled a standby; when the
// leader stops, the standby takes over within the lease duration, signs
// with the same CA and publishes under a newer incarnation; a replica that
// returns on its old volume and leads again outranks the one before it;
// two never lead at once.
func TestIntegrationLeaderElectionHandsOver(t *testing.T) {
	t.Parallel()
	k := kubetest.Start(t, "east")[0]
	ns := controlplane.DefaultKubeNamespace
	k.EnsureNamespace(t, ns, nil)
	ctx := fedtest.DeadlineContext(t, 3*time.Minute)
	tm := fedtest.NewMesh(t, testTimers)
	west := tm.AddCluster("west")
	west.Update(t, fedtest.CoffeeService("west", "payment", 2, 9090))
	tm.Join("east")
	// The replicas run as a ServiceAccount with only the permissions
	// docs/operations.md lists for leader election.
	asSA := leaderRBAC(ctx, t, k, ns)
	saClient, err := kubernetes.NewForConfig(asSA)
	if err != nil {
		t.Fatal(err)
	}
	kube := func(pod string) *controlplane.Kube {
		return &controlplane.Kube{Config: asSA, Client: saClient, Namespace: ns, Secret: controlplane.DefaultMembershipSecret, PodName: pod}
	}
	saveMembership(ctx, t, tm, k, ns, "east")
	createPods(ctx, t, k, ns, "federate-controlplane-0", "federate-controlplane-1")

	const lease = 6 * time.Second
	services := []*registry.Service{fedtest.CoffeeService("east", "orders", 3, 8080), fedtest.CoffeeService("east", "barista", 2, 8080)}
	pods := []string{"federate-controlplane-0", "federate-controlplane-1"}
	dataDirs := map[string]string{pods[0]: t.TempDir(), pods[1]: t.TempDir()} // each replica's own volume
	var slots [2]atomic.Pointer[replica]
	start := func(slot int, svcs ...*registry.Service) *replica {
		pod := pods[slot]
		src := fedtest.NewSource(svcs...)
		cp, err := controlplane.New(controlplane.Config{
			Cluster: "east", Network: "net-east", DataDir: dataDirs[pod], Gateway: "192.0.2.10:15443",
			Kube: kube(pod), Source: src, Timers: testTimers, GossipProfile: "lan", GossipRejoin: time.Second,
			GossipSeeds: tm.Seeds(), Logger: tm.Logger().With("node", pod),
			LeaderElection: &controlplane.LeaderElection{
				Identity: pod, LeaseDuration: lease, RenewDeadline: 4 * time.Second, RetryPeriod: 500 * time.Millisecond,
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		r := &replica{name: pod, cp: cp, source: src, done: make(chan struct{})}
		var rctx context.Context
		rctx, r.stop = context.WithCancel(ctx)
		go func() { defer close(r.done); r.err = cp.Run(rctx) }()
		t.Cleanup(func() { r.stop(); _ = r.wait(t) })
		slots[slot].Store(r)
		return r
	}
	start(0, services...)
	start(1, services...)

	// Sample who leads all along: never two at once.
	var both atomic.Int64
	watching, stopWatching := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-watching.Done():
				return
			case <-tick.C:
			}
			if slots[0].Load().cp.Leading() && slots[1].Load().cp.Leading() {
				both.Add(1)
			}
		}
	}()
	defer func() { stopWatching(); <-watched }()

	var leader, standby *replica
	fedtest.Eventually(t, 60*time.Second, "one replica leading and the other ready as a standby", func() bool {
		for i := range slots {
			r, other := slots[i].Load(), slots[1-i].Load()
			if r.cp.Leading() && r.cp.Readiness() == nil && !other.cp.Leading() && other.cp.Readiness() == nil {
				leader, standby = r, other
				return true
			}
		}
		return false
	})
	fedtest.Eventually(t, 30*time.Second, "west holding east's services from the leader", func() bool {
		return len(west.Member.Services("east")) == len(services)
	})
	first := west.Member.Version("east")
	if standby.cp.Member() != nil {
		t.Error("the standby runs a member: it would gossip and publish as the cluster too")
	}
	wantLabels(ctx, t, k, ns, map[string]string{leader.name: controlplane.RoleLeader, standby.name: controlplane.RoleStandby})
	if holder := leaseHolder(ctx, t, k, ns); holder != leader.name {
		t.Errorf("the Lease is held by %q, the leader is %s", holder, leader.name)
	}
	roots := leader.cp.Member().Authority().Bundle().X509Authorities()

	stopped := time.Now()
	leader.stop()
	if err := leader.wait(t); err != nil {
		t.Errorf("the stopped leader: %v", err)
	}
	fedtest.Eventually(t, lease, "the standby leading within the lease duration", standby.cp.Leading)
	took := time.Since(stopped)
	fedtest.Eventually(t, 30*time.Second, "west holding east's slice from the new leader", func() bool {
		v := west.Member.Version("east")
		return v.GetIncarnation() > first.GetIncarnation() && len(west.Member.Services("east")) == len(services)
	})
	second := west.Member.Version("east")
	t.Logf("the standby led %s after the leader stopped (lease %s)", took.Round(time.Millisecond), lease)

	// The new leader publishes changes, with the same CA as before.
	more := append(services, fedtest.CoffeeService("east", "roaster", 1, 8080))
	standby.source.Set(more...)
	fedtest.Eventually(t, 30*time.Second, "west seeing the service the new leader added", func() bool {
		return len(west.Member.Services("east")) == len(more)
	})
	if got := standby.cp.Member().Authority().Bundle().X509Authorities(); !sameCerts(got, roots) {
		t.Errorf("the new leader signs with other roots than the old one: a takeover would break every workload's certificate")
	}
	wantLabels(ctx, t, k, ns, map[string]string{standby.name: controlplane.RoleLeader})
	if holder := leaseHolder(ctx, t, k, ns); holder != standby.name {
		t.Errorf("the Lease is held by %q after the takeover, want %s", holder, standby.name)
	}

	// The first replica comes back on its old volume, stands by, and
	// leads again when the second stops: its slice, stored under the first
	// incarnation, must still win over the second leader's.
	back := start(slices.Index(pods, leader.name), append(more, fedtest.CoffeeService("east", "grinder", 1, 8080))...)
	wantLabels(ctx, t, k, ns, map[string]string{back.name: controlplane.RoleStandby})
	standby.stop()
	if err := standby.wait(t); err != nil {
		t.Errorf("the second leader, stopped: %v", err)
	}
	fedtest.Eventually(t, 30*time.Second, "west seeing the returning replica's slice", func() bool {
		v := west.Member.Version("east")
		return back.cp.Leading() && v.GetIncarnation() > second.GetIncarnation() && len(west.Member.Services("east")) == len(more)+1
	})
	if got := back.cp.Member().Authority().Bundle().X509Authorities(); !sameCerts(got, roots) {
		t.Errorf("the returning replica signs with other roots")
	}
	if n := both.Load(); n > 0 {
		t.Errorf("both replicas led at once in %d samples", n)
	}
}

// A leader that loses its Lease (here: another holder took it over, as
// after a partition) stops within the renew deadline and says why.
func TestIntegrationLeaderStopsWhenLeaseLost(t *testing.T) {
	t.Parallel()
	k := kubetest.Start(t, "east")[0]
	ns := controlplane.DefaultKubeNamespace
	k.EnsureNamespace(t, ns, nil)
	ctx := fedtest.DeadlineContext(t, 2*time.Minute)
	tm := fedtest.NewMesh(t, testTimers)
	tm.Join("east")
	kc, _ := saveMembership(ctx, t, tm, k, ns, "east")
	cp, err := controlplane.New(controlplane.Config{
		Cluster: "east", Network: "net-east", DataDir: t.TempDir(), Gateway: "192.0.2.10:15443",
		Kube: kc, Source: fedtest.NewSource(fedtest.CoffeeService("east", "orders", 2, 8080)), Timers: testTimers,
		GossipProfile: "lan", GossipSeeds: tm.Seeds(), Logger: tm.Logger(),
		LeaderElection: &controlplane.LeaderElection{Identity: "replica-a", LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 250 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if cp.Readiness() == nil {
		t.Error("a replica that has not started is ready")
	}
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	fedtest.Eventually(t, 30*time.Second, "the replica leading and ready", func() bool { return cp.Leading() && cp.Readiness() == nil })

	// Another holder takes the Lease, as a replica would once the leader
	// had been cut off past the lease duration.
	// The replica renews it meanwhile: retry on a conflict, as any writer.
	leases := k.Client.CoordinationV1().Leases(ns)
	other := "replica-b"
	err = clientretry.RetryOnConflict(clientretry.DefaultRetry, func() error {
		l, err := leases.Get(ctx, controlplane.DefaultLeaseName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.NewMicroTime(time.Now())
		l.Spec.HolderIdentity, l.Spec.AcquireTime, l.Spec.RenewTime = &other, &now, &now
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, controlplane.ErrLostLease) {
			t.Errorf("Run after losing the Lease: %v, want ErrLostLease", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the replica kept running after losing its Lease")
	}
	if cp.Leading() {
		t.Error("the replica still says it leads")
	}
	if holder := leaseHolder(ctx, t, k, ns); holder != other {
		t.Errorf("the Lease is held by %q: the replica that lost it released another's Lease", holder)
	}
}

// leaderRBAC binds a ServiceAccount to what a control plane replica under
// leader election needs in its namespace, and returns its client config.
func leaderRBAC(ctx context.Context, t *testing.T, k *kubetest.Cluster, ns string) *rest.Config {
	t.Helper()
	token := k.ServiceAccountToken(t, ns, "federate-controlplane")
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "federate-controlplane-leader"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "create", "update"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "patch"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{controlplane.DefaultMembershipSecret, controlplane.DefaultGatewaySecret}, Verbs: []string{"get", "update"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
		},
	}
	if _, err := k.Client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "federate-controlplane-leader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "federate-controlplane", Namespace: ns}},
	}
	if _, err := k.Client.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return k.ConfigWithToken(token)
}

func createPods(ctx context.Context, t *testing.T, k *kubetest.Cluster, ns string, names ...string) {
	t.Helper()
	// The ServiceAccount admission wants the default account; no
	// controller manager runs to create it.
	_, err := k.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		_, err := k.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"app.kubernetes.io/name": "federate-controlplane"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "controlplane", Image: "federate/federate:test"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// wantLabels waits until each Pod carries its role label.
func wantLabels(ctx context.Context, t *testing.T, k *kubetest.Cluster, ns string, want map[string]string) {
	t.Helper()
	fedtest.EventuallyNil(t, 20*time.Second, "the Pods' role labels", func() error {
		for pod, role := range want {
			p, err := k.Client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got := p.Labels[controlplane.RoleLabel]; got != role {
				return fmt.Errorf("pod %s is labelled %s=%q, want %q", pod, controlplane.RoleLabel, got, role)
			}
		}
		return nil
	})
}

func leaseHolder(ctx context.Context, t *testing.T, k *kubetest.Cluster, ns string) string {
	t.Helper()
	l, err := k.Client.CoordinationV1().Leases(ns).Get(ctx, controlplane.DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// Leader election needs a Kubernetes cluster for its Lease and timers in
// client-go's order; New says so before anything starts.
func TestLeaderElectionConfigIsChecked(t *testing.T) {
	t.Parallel()
	kube := &controlplane.Kube{Namespace: controlplane.DefaultKubeNamespace, Secret: controlplane.DefaultMembershipSecret}
	for _, tc := range []struct {
		name    string
		kube    *controlplane.Kube
		le      controlplane.LeaderElection
		wantErr string
	}{
		{"defaults", kube, controlplane.LeaderElection{Identity: "a"}, ""},
		{"no cluster", nil, controlplane.LeaderElection{Identity: "a"}, "--kubeconfig or --in-cluster"},
		{"renew past the lease", kube, controlplane.LeaderElection{Identity: "a", LeaseDuration: 5 * time.Second, RenewDeadline: 10 * time.Second}, "lease duration 5s > renew deadline 10s"},
		{"retry past the renew deadline", kube, controlplane.LeaderElection{Identity: "a", RetryPeriod: time.Minute}, "> retry period 1m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			le := tc.le
			_, err := controlplane.New(controlplane.Config{
				Cluster: "east", Network: "net-east", DataDir: t.TempDir(), ConfigDir: t.TempDir(), Kube: tc.kube, LeaderElection: &le,
			})
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("New: %v, want %q", err, tc.wantErr)
			}
		})
	}
}
