package agent

import (
	"path/filepath"

	"github.com/federate/federate/trust"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descAgentSVIDExpiry = prometheus.NewDesc("federate_agent_svid_expiry_timestamp_seconds",
		"Expiry (unix seconds) of the SVID the agent keeps in its state directory; renewals move it on.", nil, nil)
	descAgentRegistered = prometheus.NewDesc("federate_agent_registered",
		"1 once the control plane has accepted this VM's WorkloadEntry and sent its configuration, else 0.", nil, nil)
	descAgentProbeHealthy = prometheus.NewDesc("federate_agent_probe_healthy",
		"1 if the WorkloadGroup's readiness probe passed last time, 0 if it failed; absent before the first probe or without one.", nil, nil)
)

// Collector exposes the agent's state to Prometheus, read at scrape time.
// registered reports whether the control plane accepted the registration
// (the command wires it to Config.Ready); nil leaves the metric out.
func (a *Agent) Collector(registered func() bool) prometheus.Collector {
	return agentCollector{a: a, registered: registered}
}

type agentCollector struct {
	a          *Agent
	registered func() bool
}

func (c agentCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descAgentSVIDExpiry
	ch <- descAgentRegistered
	ch <- descAgentProbeHealthy
	describeSidecar(ch)
}

func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	// The saved SVID is the one in use: the renewer writes every renewal.
	if cred, err := trust.LoadCredential(filepath.Join(c.a.cfg.StateDir, SVIDFile)); err == nil {
		gauge(descAgentSVIDExpiry, float64(cred.Expiry().Unix()))
	}
	if c.registered != nil {
		gauge(descAgentRegistered, oneIf(c.registered()))
	}
	if known, healthy, _ := c.a.health.get(); known {
		gauge(descAgentProbeHealthy, oneIf(healthy))
	}
	if s := c.a.sidecar.Load(); s != nil {
		s.stats.collect(ch)
	}
}

func oneIf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
