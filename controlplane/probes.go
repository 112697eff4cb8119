package controlplane

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/federate/federate/internal/metrics"
)

var descLeader = prometheus.NewDesc("federate_controlplane_leader",
	"1 while this replica runs the cluster's control plane (always, without leader election), 0 while it stands by.", nil, nil)

// Live reports whether the process is alive and not wedged: the leader's
// Lease is renewed in time, and the member's maintenance loop turns.
// /livez and the gRPC health service "liveness" serve it.
func (c *ControlPlane) Live() error {
	if e := c.elector.Load(); e != nil {
		// Fails only on a leader whose Lease expired without it noticing.
		if err := e.Check(c.election.LeaseDuration); err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
	}
	if c.role.Load() == roleLeader && c.started() {
		return c.member.Live()
	}
	return nil
}

// Readiness reports whether the control plane is ready to serve: it
// serves its last known state, its source delivered the cluster's
// services once, and it knows the federation (the hub synced, or the
// store or a peer had state). A standby is ready once its Pod is labelled
// a standby, so that it counts for rollouts and disruption budgets while
// the Service, which selects the leader's label, sends it nothing; without
// a Pod name a standby is never ready. /readyz, /healthz and the gRPC
// health service "" serve it.
func (c *ControlPlane) Readiness() error {
	switch c.role.Load() {
	case roleStarting:
		return errors.New("controlplane: starting")
	case roleStandby:
		if c.cfg.Kube.PodName == "" {
			return errors.New("controlplane: standing by for the leader Lease")
		}
		return nil
	}
	if !c.started() {
		return errors.New("controlplane: starting: restoring the membership and the store")
	}
	if !c.published.Load() {
		return errors.New("controlplane: the cluster's services are not read yet")
	}
	return c.member.Federated()
}

// started reports whether run got as far as Ready.
func (c *ControlPlane) started() bool {
	select {
	case <-c.ready:
		return true
	default:
		return false
	}
}

func collectLeader(c *ControlPlane, ch chan<- prometheus.Metric) {
	metrics.Gauge(ch, descLeader, metrics.Bool(c.Leading()))
}
