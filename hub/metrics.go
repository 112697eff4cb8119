package hub

import (
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/trust"
	"github.com/prometheus/client_golang/prometheus"
)

// Metric descriptions. Every value is read at scrape time from the state
// 'federate status' shows, so the sync paths pay nothing for metrics.
var (
	descClusterState = prometheus.NewDesc("federate_cluster_state",
		"1 for the cluster's current liveness state (alive, suspect, stale, dead), 0 for the others.", []string{"cluster", "state"}, nil)
	descSliceVersion = prometheus.NewDesc("federate_slice_version",
		"Counter of the newest slice version held for the cluster; it grows with every change the cluster publishes.", []string{"cluster"}, nil)
	descSliceIncarnation = prometheus.NewDesc("federate_slice_incarnation",
		"Incarnation of the newest slice version held for the cluster; it changes when the cluster lost its store.", []string{"cluster"}, nil)
	descSyncLag = prometheus.NewDesc("federate_sync_lag_seconds",
		"Seconds since the cluster was last confirmed alive by gossip; the state turns stale at stale_after.", []string{"cluster"}, nil)
	descPropagationLag = prometheus.NewDesc("federate_propagation_lag_seconds",
		"Seconds from the owner signing the cluster's newest record to this process applying it.", []string{"cluster"}, nil)
	descServices = prometheus.NewDesc("federate_services",
		"Exported services in the cluster's slice.", []string{"cluster"}, nil)
	descEndpoints = prometheus.NewDesc("federate_endpoints",
		"Endpoints in the cluster's slice.", []string{"cluster"}, nil)
	descUnhealthy = prometheus.NewDesc("federate_unhealthy_endpoints",
		"Endpoints of the cluster that receive no traffic because the cluster is stale or dead.", []string{"cluster"}, nil)
	descGossipMembers = prometheus.NewDesc("federate_gossip_members",
		"Live gossip members, this process included.", nil, nil)
	descTimer = prometheus.NewDesc("federate_liveness_timer_seconds",
		"Configured liveness timers: stale_after, dead_after, expire_after.", []string{"timer"}, nil)
	descCertExpiry = prometheus.NewDesc("federate_certificate_expiry_timestamp_seconds",
		"Expiry (unix seconds) of this process's certificates, by kind.", []string{"kind"}, nil)
	descBundleSeq = prometheus.NewDesc("federate_bundle_sequence",
		"Sequence number of the SPIFFE bundle held for the trust domain.", []string{"trust_domain"}, nil)
	descBundleExpiry = prometheus.NewDesc("federate_bundle_expiry_timestamp_seconds",
		"Earliest root expiry (unix seconds) in the bundle held for the trust domain.", []string{"trust_domain"}, nil)

	// Control plane only.
	descHubConnected = prometheus.NewDesc("federate_hub_connected",
		"1 while the stream from the hub is open and synced; 0 while the hub is away and updates flow by gossip and peer fetch.", nil, nil)
	descRotation = prometheus.NewDesc("federate_root_rotation_phase",
		"1 for the phase of this cluster's root rotation (stable, added, switched), 0 for the others.", []string{"phase"}, nil)
	descPolicyWarnings = prometheus.NewDesc("federate_policy_warnings",
		"Warnings about locality policies and failure domains, as 'federate status' lists them.", nil, nil)

	// Hub only.
	descSubscribers = prometheus.NewDesc("federate_hub_subscribers",
		"Open Subscribe streams: control planes the hub relays to now.", nil, nil)
	descExternalRefresh = prometheus.NewDesc("federate_external_bundle_refresh_timestamp_seconds",
		"When (unix seconds) the bundle of an imported trust domain was last fetched.", []string{"trust_domain"}, nil)
	descExternalError = prometheus.NewDesc("federate_external_bundle_error",
		"1 if the last fetch of an imported trust domain's bundle failed, else 0.", []string{"trust_domain"}, nil)
)

var (
	commonDescs = []*prometheus.Desc{
		descClusterState, descSliceVersion, descSliceIncarnation, descSyncLag, descPropagationLag,
		descServices, descEndpoints, descUnhealthy, descGossipMembers, descTimer, descCertExpiry,
		descBundleSeq, descBundleExpiry,
	}
	clusterStates  = []string{StateAlive, StateSuspect, StateStale, StateDead}
	rotationPhases = []string{trust.PhaseStable, trust.PhaseAdded, trust.PhaseSwitched}
)

// Collector exposes the control plane's view of the federation to
// Prometheus. It reports nothing before the member is Ready.
func (m *Member) Collector() prometheus.Collector { return memberCollector{m} }

type memberCollector struct{ m *Member }

func (c memberCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append(commonDescs, descHubConnected, descRotation, descPolicyWarnings) {
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
	collectStatus(ch, st, now, len(m.gossip.Members())+1)
	collectBundles(ch, m.bundles)
	gauge(ch, descCertExpiry, unix(m.cfg.Credential.Expiry()), "cluster")
	gauge(ch, descCertExpiry, unix(earliest(m.cfg.CA)), "mesh_ca")
	rot := m.authority.Status()
	gauge(ch, descCertExpiry, unix(rot.RootExpiry), "cluster_ca")
	for _, p := range rotationPhases {
		gauge(ch, descRotation, boolValue(rot.Phase == p), p)
	}
	gauge(ch, descHubConnected, boolValue(m.hubConnected()))
	gauge(ch, descPolicyWarnings, float64(len(st.GetPolicyWarnings())))
}

// Collector exposes the hub's view of the federation to Prometheus. It
// reports nothing before the hub is Ready.
func (s *Server) Collector() prometheus.Collector { return serverCollector{s} }

type serverCollector struct{ s *Server }

func (c serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append(commonDescs, descSubscribers, descExternalRefresh, descExternalError) {
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
	collectStatus(ch, buildStatus(s.cfg.Mesh, "", s.set, s.live, members, now), now, len(members)+1)
	collectBundles(ch, s.bundles)
	collectBundles(ch, s.external)
	gauge(ch, descCertExpiry, unix(s.credentialExpiry()), "hub")
	gauge(ch, descCertExpiry, unix(s.ca.Cert.NotAfter), "mesh_ca")
	gauge(ch, descSubscribers, float64(s.subscribers()))
	for _, im := range s.importers {
		ext := im.status()
		if ext.GetLastRefresh() != 0 {
			gauge(ch, descExternalRefresh, float64(ext.GetLastRefresh()), ext.GetTrustDomain())
		}
		gauge(ch, descExternalError, boolValue(ext.GetError() != ""), ext.GetTrustDomain())
	}
}

// collectStatus reports what 'federate status' shows per cluster.
func collectStatus(ch chan<- prometheus.Metric, st *hubpb.StatusResponse, now time.Time, gossipMembers int) {
	for _, cs := range st.GetClusters() {
		name := cs.GetName()
		for _, state := range clusterStates {
			gauge(ch, descClusterState, boolValue(cs.GetState() == state), name, state)
		}
		gauge(ch, descSliceVersion, float64(cs.GetSliceVersion().GetCounter()), name)
		gauge(ch, descSliceIncarnation, float64(cs.GetSliceVersion().GetIncarnation()), name)
		gauge(ch, descSyncLag, max(0, now.Sub(time.UnixMilli(cs.GetLastSeen())).Seconds()), name)
		gauge(ch, descPropagationLag, float64(cs.GetLagMs())/1000, name)
		gauge(ch, descServices, float64(cs.GetServices()), name)
		gauge(ch, descEndpoints, float64(cs.GetEndpoints()), name)
		gauge(ch, descUnhealthy, float64(cs.GetUnhealthyEndpoints()), name)
	}
	gauge(ch, descGossipMembers, float64(gossipMembers))
	ms := func(v int64) float64 { return (time.Duration(v) * time.Millisecond).Seconds() }
	gauge(ch, descTimer, ms(st.GetStaleAfterMs()), "stale_after")
	gauge(ch, descTimer, ms(st.GetDeadAfterMs()), "dead_after")
	gauge(ch, descTimer, ms(st.GetExpireAfterMs()), "expire_after")
}

// collectBundles reports the sequence and root expiry of every bundle held.
func collectBundles(ch chan<- prometheus.Metric, set *trust.BundleSet) {
	for _, td := range set.TrustDomains() {
		b, err := set.GetBundleForTrustDomain(td)
		if err != nil {
			continue // removed since TrustDomains
		}
		if seq, ok := b.SequenceNumber(); ok {
			gauge(ch, descBundleSeq, float64(seq), td.Name())
		}
		if exp := trust.Expiry(b); !exp.IsZero() {
			gauge(ch, descBundleExpiry, unix(exp), td.Name())
		}
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// unix is t in unix seconds; an unknown time is 0.
func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.Unix())
}
