package agent

import (
	"io"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// outcome is how a sidecar connection ended, as its metric names it.
type outcome int

const (
	relayed         outcome = iota // both sides connected; the bytes flowed until one ended
	handshakeFailed                // inbound: no certificate, an unfederated or expired one, or not TLS
	unknownPort                    // inbound: the server name maps to no port of this workload
	appRefused                     // inbound: the application did not accept
	denied                         // inbound: an AuthorizationPolicy refused the caller
	noEndpoints                    // outbound: none known, or none may take traffic
	connectFailed                  // outbound: no endpoint completed a connection and handshake
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"relayed", "handshake_failed", "unknown_port", "app_refused", "denied", "no_endpoints", "connect_failed"}

// Each direction reports only the outcomes it can have, from the first
// scrape on, so that rates over them work from zero.
var (
	inboundOutcomes  = []outcome{relayed, handshakeFailed, unknownPort, appRefused, denied}
	outboundOutcomes = []outcome{relayed, noEndpoints, connectFailed}
)

// flowStats counts one direction of the sidecar's connections: inbound
// (callers reaching the application) or outbound (the application
// calling imported services).
type flowStats struct {
	outcomes [numOutcomes]atomic.Uint64
	active   atomic.Int64
	// Bytes the local application sent and received, counted as they
	// pass, not when the connection ends.
	sent, received atomic.Uint64
}

// begin counts a connection as active until the returned function records
// its outcome.
func (f *flowStats) begin() (end func(outcome)) {
	f.active.Add(1)
	return func(o outcome) {
		f.outcomes[o].Add(1)
		f.active.Add(-1)
	}
}

type sidecarStats struct{ inbound, outbound flowStats }

var (
	descSidecarConnections = prometheus.NewDesc("federate_agent_sidecar_connections_total",
		"Connections the sidecar handled, by direction (inbound: callers of the application; outbound: the application's calls) and outcome.",
		[]string{"direction", "outcome"}, nil)
	descSidecarActive = prometheus.NewDesc("federate_agent_sidecar_active_connections",
		"Connections the sidecar holds now, by direction.", []string{"direction"}, nil)
	descSidecarSent = prometheus.NewDesc("federate_agent_sidecar_sent_bytes_total",
		"Bytes the application sent through the sidecar, by direction.", []string{"direction"}, nil)
	descSidecarReceived = prometheus.NewDesc("federate_agent_sidecar_received_bytes_total",
		"Bytes the application received through the sidecar, by direction.", []string{"direction"}, nil)
)

func describeSidecar(ch chan<- *prometheus.Desc) {
	ch <- descSidecarConnections
	ch <- descSidecarActive
	ch <- descSidecarSent
	ch <- descSidecarReceived
}

func (s *sidecarStats) collect(ch chan<- prometheus.Metric) {
	for _, d := range []struct {
		name     string
		flow     *flowStats
		outcomes []outcome
	}{{"inbound", &s.inbound, inboundOutcomes}, {"outbound", &s.outbound, outboundOutcomes}} {
		for _, o := range d.outcomes {
			ch <- prometheus.MustNewConstMetric(descSidecarConnections, prometheus.CounterValue, float64(d.flow.outcomes[o].Load()), d.name, outcomeNames[o])
		}
		ch <- prometheus.MustNewConstMetric(descSidecarActive, prometheus.GaugeValue, float64(d.flow.active.Load()), d.name)
		ch <- prometheus.MustNewConstMetric(descSidecarSent, prometheus.CounterValue, float64(d.flow.sent.Load()), d.name)
		ch <- prometheus.MustNewConstMetric(descSidecarReceived, prometheus.CounterValue, float64(d.flow.received.Load()), d.name)
	}
}

// countingWriter adds what it writes to n.
type countingWriter struct {
	w io.Writer
	n *atomic.Uint64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(uint64(n))
	return n, err
}
