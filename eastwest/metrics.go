package eastwest

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric descriptions, named as Prometheus users expect.
var (
	descAccepted        = prometheus.NewDesc("federate_gateway_connections_accepted_total", "Connections accepted on the passthrough port.", nil, nil)
	descActive          = prometheus.NewDesc("federate_gateway_connections_active", "Connections open now, in any phase.", nil, nil)
	descRelayed         = prometheus.NewDesc("federate_gateway_connections_relayed_total", "Connections relayed to an upstream.", nil, nil)
	descBytes           = prometheus.NewDesc("federate_gateway_bytes_total", "Bytes relayed, by direction.", []string{"direction"}, nil)
	descConnectFailures = prometheus.NewDesc("federate_gateway_upstream_connect_failures_total", "Upstream connect attempts that failed.", nil, nil)
	descEjections       = prometheus.NewDesc("federate_gateway_upstream_ejections_total", "Endpoints ejected after consecutive connect failures.", nil, nil)
	descBackoffs        = prometheus.NewDesc("federate_gateway_accept_backoffs_total", "Accepts that failed for lack of file descriptors, each followed by a pause.", nil, nil)
	descPaused          = prometheus.NewDesc("federate_gateway_accept_paused", "1 while accepting is paused for lack of file descriptors.", nil, nil)
	descParked          = prometheus.NewDesc("federate_gateway_directions_parked", "Directions of idle connections waiting without a goroutine.", nil, nil)
	descRefused         = prometheus.NewDesc("federate_gateway_connections_refused_total", "Connections refused, by reason.", []string{"reason"}, nil)
)

// Collector exposes the gateway's counters to Prometheus; it reads them at
// scrape time, so the data path pays nothing for metrics.
func (g *Gateway) Collector() prometheus.Collector { return collector{g} }

type collector struct{ g *Gateway }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAccepted, descActive, descRelayed, descBytes, descConnectFailures, descEjections, descBackoffs, descPaused, descParked, descRefused} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.g.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descAccepted, s.Accepted)
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(s.Active))
	counter(descRelayed, s.Relayed)
	counter(descBytes, s.BytesToUpstream, "to_upstream")
	counter(descBytes, s.BytesToClient, "to_client")
	counter(descConnectFailures, s.ConnectFailures)
	counter(descEjections, s.Ejections)
	counter(descBackoffs, s.AcceptBackoffs)
	paused := 0.0
	if s.AcceptPaused {
		paused = 1
	}
	ch <- prometheus.MustNewConstMetric(descPaused, prometheus.GaugeValue, paused)
	ch <- prometheus.MustNewConstMetric(descParked, prometheus.GaugeValue, float64(s.Parked))
	for r := Refusal(0); r < numRefusals; r++ {
		counter(descRefused, s.Refused[r], r.String())
	}
}
