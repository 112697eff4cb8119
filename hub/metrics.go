package hub

import (
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Hub-only metrics of the hub's own health.
var (
	descStoreWriteFailures = prometheus.NewDesc("federate_hub_store_write_failures_total",
		"Store writes that failed (a full disk, most often); the hub refuses the changes they carried.", nil, nil)
	descStoreHealthy = prometheus.NewDesc("federate_hub_store_healthy",
		"1 if the last store write succeeded, 0 while writes fail.", nil, nil)
	descUnauthConns = prometheus.NewDesc("federate_hub_unauthenticated_connections",
		"Open connections without a client certificate (joining clusters).", nil, nil)
	descUnauthRefused = prometheus.NewDesc("federate_hub_unauthenticated_refused_total",
		"Connections without a client certificate closed because the limit of open ones was reached.", nil, nil)
)

// Collector exposes the hub's view of the federation to Prometheus. It
// reports nothing before the hub is Ready.
func (s *Server) Collector() prometheus.Collector { return serverCollector{s} }

type serverCollector struct{ s *Server }

func (c serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append(append(metrics.Common, metrics.External...), metrics.DescSubscribers,
		descStoreWriteFailures, descStoreHealthy, descUnauthConns, descUnauthRefused) {
		ch <- d
	}
}

func (c serverCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	select {
	case <-s.ready:
	default:
		return
	}
	now := s.cfg.Now()
	members := s.gossip.Members()
	metrics.Status(ch, gossip.BuildStatus(s.cfg.Mesh, "", s.set, s.live, members, now), now, len(members)+1)
	metrics.Bundles(ch, s.bundles)
	metrics.Bundles(ch, s.external)
	metrics.Gauge(ch, metrics.DescCertExpiry, metrics.Unix(s.credentialExpiry()), "hub")
	metrics.Gauge(ch, metrics.DescCertExpiry, metrics.Unix(s.ca.Cert.NotAfter), "mesh_ca")
	metrics.Gauge(ch, metrics.DescSubscribers, float64(s.subscribers()))
	st := s.storeStatus()
	ch <- prometheus.MustNewConstMetric(descStoreWriteFailures, prometheus.CounterValue, float64(st.failures))
	metrics.Gauge(ch, descStoreHealthy, metrics.Bool(st.lastErr == nil))
	metrics.Gauge(ch, descUnauthConns, float64(s.split.unauthenticatedConns()))
	ch <- prometheus.MustNewConstMetric(descUnauthRefused, prometheus.CounterValue, float64(s.split.refused.Load()))
	metrics.ExternalTrustDomains(ch, s.externalStatus())
}

// credentialExpiry is when the hub's own credential expires; valid once Ready.
func (s *Server) credentialExpiry() time.Time {
	if s.cred == nil {
		return time.Time{}
	}
	return s.cred.Expiry()
}

// subscribers counts the open Subscribe streams.
func (s *Server) subscribers() int {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	return len(s.subs)
}
