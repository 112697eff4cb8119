// Package metrics holds the Prometheus metrics that the hub and the control
// planes both export, read at scrape time from the state 'federate status'
// shows.
package metrics

import (
	"crypto/x509"
	"time"

	"github.com/federate/federate/gossip"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/trust"
	"github.com/prometheus/client_golang/prometheus"
)

// Metric descriptions. Every value is read at scrape time from the state
// 'federate status' shows, so the sync paths pay nothing for metrics.
var (
	DescClusterState = prometheus.NewDesc("federate_cluster_state",
		"1 for the cluster's current liveness state (alive, suspect, stale, dead), 0 for the others.", []string{"cluster", "state"}, nil)
	DescSliceVersion = prometheus.NewDesc("federate_slice_version",
		"Counter of the newest slice version held for the cluster; it grows with every change the cluster publishes.", []string{"cluster"}, nil)
	DescSliceIncarnation = prometheus.NewDesc("federate_slice_incarnation",
		"Incarnation of the newest slice version held for the cluster; it changes when the cluster lost its store.", []string{"cluster"}, nil)
	DescSyncLag = prometheus.NewDesc("federate_sync_lag_seconds",
		"Seconds since the cluster was last heard from directly over gossip; the state turns stale at stale_after.", []string{"cluster"}, nil)
	DescPropagationLag = prometheus.NewDesc("federate_propagation_lag_seconds",
		"Seconds from the owner signing the cluster's newest record to this process applying it.", []string{"cluster"}, nil)
	DescServices = prometheus.NewDesc("federate_services",
		"Exported services in the cluster's slice.", []string{"cluster"}, nil)
	DescEndpoints = prometheus.NewDesc("federate_endpoints",
		"Endpoints in the cluster's slice.", []string{"cluster"}, nil)
	DescUnhealthy = prometheus.NewDesc("federate_unhealthy_endpoints",
		"Endpoints of the cluster that receive no traffic because the cluster is stale or dead.", []string{"cluster"}, nil)
	DescGossipMembers = prometheus.NewDesc("federate_gossip_members",
		"Live gossip members, this process included.", nil, nil)
	DescTimer = prometheus.NewDesc("federate_liveness_timer_seconds",
		"Configured liveness timers: stale_after, dead_after, expire_after.", []string{"timer"}, nil)
	DescCertExpiry = prometheus.NewDesc("federate_certificate_expiry_timestamp_seconds",
		"Expiry (Unix seconds) of this process's certificates, by kind.", []string{"kind"}, nil)
	DescBundleSeq = prometheus.NewDesc("federate_bundle_sequence",
		"Sequence number of the SPIFFE bundle held for the trust domain.", []string{"trust_domain"}, nil)
	DescBundleExpiry = prometheus.NewDesc("federate_bundle_expiry_timestamp_seconds",
		"Earliest root expiry (Unix seconds) in the bundle held for the trust domain.", []string{"trust_domain"}, nil)

	DescGossipForeignClaims = prometheus.NewDesc("federate_gossip_foreign_claims_total",
		"Gossip claims dropped because the peer spoke as another cluster's node, by the peer's own identity (its cluster, or hub).", []string{"peer"}, nil)
	DescGossipClosed = prometheus.NewDesc("federate_gossip_connections_closed_total",
		"Gossip connections refused or closed: foreign_claim, revoked (a removed cluster or an expired credential), idle.", []string{"reason"}, nil)
	DescGossipDropped = prometheus.NewDesc("federate_gossip_packets_dropped_total",
		"Outgoing gossip packets dropped before they were sent: queue_full (a peer that does not keep up, such as a frozen one), unreachable, revoked.", []string{"reason"}, nil)

	// Control plane only.
	DescHubConnected = prometheus.NewDesc("federate_hub_connected",
		"1 while the stream from the hub is open and synced; 0 while the hub is away and updates flow by gossip and peer fetch.", nil, nil)
	DescHubReplica = prometheus.NewDesc("federate_hub_replica",
		"1 for the hub replica (its address) the synced stream comes from; absent while no stream is synced.", []string{"address"}, nil)
	DescHubAddress = prometheus.NewDesc("federate_hub_address",
		"1 for each hub address the member dials: those it joined with, then the replicas the hub named.", []string{"address"}, nil)
	DescRotation = prometheus.NewDesc("federate_root_rotation_phase",
		"1 for the phase of this cluster's root rotation (stable, added, switched), 0 for the others.", []string{"phase"}, nil)
	DescPolicyWarnings = prometheus.NewDesc("federate_policy_warnings",
		"Warnings about locality policies and failure domains, as 'federate status' lists them.", nil, nil)

	// Imported trust domains: the hub fetches them, control planes hold
	// what the hub relays.
	DescExternalRefresh = prometheus.NewDesc("federate_external_bundle_refresh_timestamp_seconds",
		"When (Unix seconds) the bundle of an imported trust domain was last fetched (hub) or last changed (control plane).", []string{"trust_domain"}, nil)
	DescExternalNextRefresh = prometheus.NewDesc("federate_external_bundle_next_refresh_timestamp_seconds",
		"When (Unix seconds) the hub fetches an imported trust domain's bundle next.", []string{"trust_domain"}, nil)
	DescExternalError = prometheus.NewDesc("federate_external_bundle_error",
		"1 if the last fetch of an imported trust domain's bundle failed or its bundle was refused, else 0.", []string{"trust_domain"}, nil)
	External = []*prometheus.Desc{DescExternalRefresh, DescExternalNextRefresh, DescExternalError}

	// Hub only.
	DescSubscribers = prometheus.NewDesc("federate_hub_subscribers",
		"Open Subscribe streams: control planes the hub relays to now.", nil, nil)
)

var (
	Common = []*prometheus.Desc{
		DescClusterState, DescSliceVersion, DescSliceIncarnation, DescSyncLag, DescPropagationLag,
		DescServices, DescEndpoints, DescUnhealthy, DescGossipMembers, DescTimer, DescCertExpiry,
		DescBundleSeq, DescBundleExpiry,
	}
	clusterStates  = []string{gossip.StateAlive, gossip.StateSuspect, gossip.StateStale, gossip.StateDead}
	RotationPhases = []string{trust.PhaseStable, trust.PhaseAdded, trust.PhaseSwitched}
)

// Status reports what 'federate status' shows per cluster.
func Status(ch chan<- prometheus.Metric, st *hubpb.StatusResponse, now time.Time, gossipMembers int) {
	for _, cs := range st.GetClusters() {
		name := cs.GetName()
		for _, state := range clusterStates {
			Gauge(ch, DescClusterState, Bool(cs.GetState() == state), name, state)
		}
		Gauge(ch, DescSliceVersion, float64(cs.GetSliceVersion().GetCounter()), name)
		Gauge(ch, DescSliceIncarnation, float64(cs.GetSliceVersion().GetIncarnation()), name)
		Gauge(ch, DescSyncLag, max(0, now.Sub(time.UnixMilli(cs.GetLastSeen())).Seconds()), name)
		Gauge(ch, DescPropagationLag, float64(cs.GetLagMs())/1000, name)
		Gauge(ch, DescServices, float64(cs.GetServices()), name)
		Gauge(ch, DescEndpoints, float64(cs.GetEndpoints()), name)
		Gauge(ch, DescUnhealthy, float64(cs.GetUnhealthyEndpoints()), name)
	}
	Gauge(ch, DescGossipMembers, float64(gossipMembers))
	ms := func(v int64) float64 { return (time.Duration(v) * time.Millisecond).Seconds() }
	Gauge(ch, DescTimer, ms(st.GetStaleAfterMs()), "stale_after")
	Gauge(ch, DescTimer, ms(st.GetDeadAfterMs()), "dead_after")
	Gauge(ch, DescTimer, ms(st.GetExpireAfterMs()), "expire_after")
}

// Bundles reports the sequence and root expiry of every bundle held.
func Bundles(ch chan<- prometheus.Metric, set *trust.BundleSet) {
	for _, td := range set.TrustDomains() {
		b, err := set.GetBundleForTrustDomain(td)
		if err != nil {
			continue // removed since TrustDomains
		}
		if seq, ok := b.SequenceNumber(); ok {
			Gauge(ch, DescBundleSeq, float64(seq), td.Name())
		}
		if exp := trust.Expiry(b); !exp.IsZero() {
			Gauge(ch, DescBundleExpiry, Unix(exp), td.Name())
		}
	}
}

// ExternalTrustDomains reports the refresh times and error state of every
// imported trust domain, as status shows them.
func ExternalTrustDomains(ch chan<- prometheus.Metric, exts []*hubpb.ExternalTrustDomain) {
	for _, ext := range exts {
		td := ext.GetTrustDomain()
		if ext.GetLastRefresh() != 0 {
			Gauge(ch, DescExternalRefresh, float64(ext.GetLastRefresh()), td)
		}
		if ext.GetNextRefresh() != 0 {
			Gauge(ch, DescExternalNextRefresh, float64(ext.GetNextRefresh()), td)
		}
		Gauge(ch, DescExternalError, Bool(ext.GetError() != ""), td)
	}
}

// GossipReasons are the reasons federate_gossip_connections_closed_total
// counts, each reported from the start.
var GossipReasons = []string{gossip.ClosedForeignClaim, gossip.ClosedRevoked, gossip.ClosedIdle}

// GossipDropReasons are the reasons federate_gossip_packets_dropped_total
// counts, each reported from the start.
var GossipDropReasons = []string{gossip.DroppedQueueFull, gossip.DroppedUnreachable, gossip.DroppedRevoked}

// Gossip reports what the gossip layer refused and dropped.
func Gossip(ch chan<- prometheus.Metric, st gossip.Stats) {
	for peer, n := range st.ForeignClaims {
		Counter(ch, DescGossipForeignClaims, float64(n), peer)
	}
	for _, reason := range GossipReasons {
		Counter(ch, DescGossipClosed, float64(st.Closed[reason]), reason)
	}
	for _, reason := range GossipDropReasons {
		Counter(ch, DescGossipDropped, float64(st.Dropped[reason]), reason)
	}
}

func Counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func Gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func Bool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Unix is t in Unix seconds; an unknown time is 0.
func Unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.Unix())
}

// Earliest returns the earliest expiry among certs.
func Earliest(certs []*x509.Certificate) time.Time {
	var out time.Time
	for _, c := range certs {
		if out.IsZero() || c.NotAfter.Before(out) {
			out = c.NotAfter
		}
	}
	return out
}
