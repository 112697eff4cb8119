package member

import (
	"github.com/federate/federate/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exposes the control plane's view of the federation to
// Prometheus. It reports nothing before the member is Ready.
func (m *Member) Collector() prometheus.Collector { return memberCollector{m} }

type memberCollector struct{ m *Member }

func (c memberCollector) Describe(ch chan<- *prometheus.Desc) { Describe(ch) }

// Describe sends the descriptions of every metric a member exports.
func Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append(append(metrics.Common, metrics.External...), metrics.DescHubConnected, metrics.DescHubReplica, metrics.DescHubAddress, metrics.DescRotation, metrics.DescPolicyWarnings,
		metrics.DescGossipForeignClaims, metrics.DescGossipClosed, metrics.DescGossipDropped) {
		ch <- d
	}
}

func (c memberCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	select {
	case <-m.ready: // gossip and the CA exist from here on
	default:
		return
	}
	now := m.cfg.Now()
	st := m.StatusNow()
	metrics.Status(ch, st, now, len(m.gossip.Members())+1)
	metrics.Bundles(ch, m.bundles)
	metrics.ExternalTrustDomains(ch, st.GetExternal())
	metrics.Gauge(ch, metrics.DescCertExpiry, metrics.Unix(m.cfg.Credential.Expiry()), "cluster")
	metrics.Gauge(ch, metrics.DescCertExpiry, metrics.Unix(metrics.Earliest(m.cfg.CA)), "mesh_ca")
	rot := m.authority.Status()
	metrics.Gauge(ch, metrics.DescCertExpiry, metrics.Unix(rot.RootExpiry), "cluster_ca")
	for _, p := range metrics.RotationPhases {
		metrics.Gauge(ch, metrics.DescRotation, metrics.Bool(rot.Phase == p), p)
	}
	metrics.Gauge(ch, metrics.DescHubConnected, metrics.Bool(m.hubConnected()))
	if replica := m.hubReplicaAddr(); replica != "" {
		metrics.Gauge(ch, metrics.DescHubReplica, 1, replica)
	}
	for _, a := range m.Hubs() {
		metrics.Gauge(ch, metrics.DescHubAddress, 1, a)
	}
	metrics.Gauge(ch, metrics.DescPolicyWarnings, float64(len(st.GetPolicyWarnings())))
	metrics.Gossip(ch, m.gossip.Stats())
}

// hubConnected reports whether the member's stream from the hub is synced.
func (m *Member) hubConnected() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hubSynced
}

// hubReplicaAddr is the address of the hub replica whose stream is synced,
// or "" while none is.
func (m *Member) hubReplicaAddr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hubReplica
}
