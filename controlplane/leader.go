package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Defaults of leader election, those of kube-controller-manager.
const (
	DefaultLeaseName     = "federate-controlplane"
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// RoleLabel is the label the control plane keeps on its own Pod under
// leader election: RoleLeader on the replica that leads, RoleStandby on
// the others. The control plane's Service selects RoleLeader, so that
// gateways, VM agents and peers reach the replica that holds the
// cluster's identity, while every replica stays Ready for rollouts and
// PodDisruptionBudgets.
const (
	RoleLabel   = "federate.io/role"
	RoleLeader  = "leader"
	RoleStandby = "standby"
)

// ErrLostLease ends a control plane that stopped renewing its Lease: its
// process exits, and restarts as a standby.
var ErrLostLease = errors.New("controlplane: lost the leader Lease: stopped, so that the new leader is the only one speaking for the cluster; restart to stand by")

// LeaderElection runs the control plane only while this replica holds a
// coordination.k8s.io Lease, so that of several replicas exactly one
// speaks for the cluster. Standbys only wait: they join gossip, publish,
// sign and serve nothing, and hold no connection but the Lease's.
type LeaderElection struct {
	// Lease is the Lease's name (default DefaultLeaseName), in the Kube
	// namespace.
	Lease string
	// Identity names this replica in the Lease (default the host name,
	// which is the Pod's name).
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's:
	// standbys take over at most LeaseDuration after the leader stopped
	// renewing, and at once (within RetryPeriod) after it stopped cleanly.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

// roles of a replica, for the probes.
const (
	roleStarting int32 = iota
	roleStandby
	roleLeader
)

func (l *LeaderElection) withDefaults() (LeaderElection, error) {
	out := *l
	if out.Lease == "" {
		out.Lease = DefaultLeaseName
	}
	if out.Identity == "" {
		host, err := os.Hostname()
		if err != nil {
			return out, fmt.Errorf("controlplane: leader election needs an identity: %w", err)
		}
		out.Identity = host
	}
	if out.LeaseDuration == 0 {
		out.LeaseDuration = DefaultLeaseDuration
	}
	if out.RenewDeadline == 0 {
		out.RenewDeadline = DefaultRenewDeadline
	}
	if out.RetryPeriod == 0 {
		out.RetryPeriod = DefaultRetryPeriod
	}
	if out.LeaseDuration <= out.RenewDeadline || out.RenewDeadline <= out.RetryPeriod {
		return out, fmt.Errorf("controlplane: leader election wants lease duration %s > renew deadline %s > retry period %s", out.LeaseDuration, out.RenewDeadline, out.RetryPeriod)
	}
	return out, nil
}

// Leading reports whether this replica runs the control plane now: always
// without leader election, only while it holds the Lease with it.
func (c *ControlPlane) Leading() bool { return c.role.Load() == roleLeader }

// runElected stands by until this replica holds the Lease, then runs the
// control plane until ctx ends or the Lease is lost. The Lease is released
// only once the control plane has stopped, so that two replicas never run
// at once; a clean stop hands over within RetryPeriod.
func (c *ControlPlane) runElected(ctx context.Context) error {
	le := c.election
	k := c.cfg.Kube
	if err := c.labelPod(ctx, RoleStandby); err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it stood by
		}
		return err
	}
	c.role.Store(roleStandby)
	c.log.Info("standing by for the leader Lease", "lease", k.Namespace+"/"+le.Lease, "identity", le.Identity)

	// The elector's context outlives ctx: it ends only once nothing runs
	// as leader any more, and then releases the Lease.
	electing, stopElecting := context.WithCancel(context.WithoutCancel(ctx))
	defer stopElecting()
	var (
		mu       sync.Mutex // guards leading and finished
		leading  bool       // OnStartedLeading runs the control plane
		finished bool       // the elector returned: too late to lead
		runErr   error
		ran      = make(chan struct{})
	)
	stopStandby := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !leading {
			stopElecting()
		}
	})
	defer stopStandby()
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: k.Namespace, Name: le.Lease},
			Client:     k.Client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: le.Identity},
		},
		LeaseDuration: le.LeaseDuration, RenewDeadline: le.RenewDeadline, RetryPeriod: le.RetryPeriod,
		ReleaseOnCancel: true, Name: "federate-controlplane-" + c.cfg.Cluster,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lease context.Context) {
				// client-go starts this on its own goroutine and may
				// return before it runs: once Run returned, do nothing.
				mu.Lock()
				if finished {
					mu.Unlock()
					return
				}
				leading = true
				mu.Unlock()
				defer close(ran)
				defer stopElecting() // release: nothing runs as leader any more
				runErr = c.lead(ctx, lease)
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("controlplane: leader election: %w", err)
	}
	c.elector.Store(elector)
	elector.Run(electing)
	mu.Lock()
	finished = true
	started := leading
	mu.Unlock()
	if started {
		<-ran
	}
	return runErr
}

// lead runs the control plane while lease lasts and ctx is not done.
func (c *ControlPlane) lead(ctx, lease context.Context) error {
	c.log.Info("leading: this replica now speaks for the cluster", "identity", c.election.Identity)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(lease, cancel)
	defer stop()
	c.role.Store(roleLeader)
	labelled := make(chan struct{})
	go func() {
		defer close(labelled)
		if err := c.labelPod(runCtx, RoleLeader); err != nil && runCtx.Err() == nil {
			c.log.Error("label this Pod as the leader", "err", err)
		}
	}()
	err := c.run(runCtx)
	<-labelled
	c.role.Store(roleStandby)
	if lease.Err() != nil && ctx.Err() == nil {
		return errors.Join(err, ErrLostLease)
	}
	return err
}

// labelPod sets RoleLabel on this replica's Pod, retrying until it
// succeeds or ctx ends; without a Pod name it does nothing.
func (c *ControlPlane) labelPod(ctx context.Context, role string) error {
	k := c.cfg.Kube
	if k.PodName == "" {
		return nil
	}
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:%q}}}`, RoleLabel, role)
	delay := 500 * time.Millisecond
	for {
		_, err := k.Client.CoreV1().Pods(k.Namespace).Patch(ctx, k.PodName, types.MergePatchType, patch, metav1.PatchOptions{})
		if err == nil {
			return nil
		}
		if apierrors.IsForbidden(err) || apierrors.IsNotFound(err) {
			return fmt.Errorf("controlplane: label Pod %s/%s %s=%s: %w (check --pod-name, and that the control plane may get and patch pods in its namespace)", k.Namespace, k.PodName, RoleLabel, role, err)
		}
		c.log.Warn("label this Pod; retrying", "pod", k.Namespace+"/"+k.PodName, "label", RoleLabel+"="+role, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("controlplane: label Pod %s/%s %s=%s: %w", k.Namespace, k.PodName, RoleLabel, role, err)
		case <-t.C:
		}
		delay = min(2*delay, 5*time.Second)
	}
}
