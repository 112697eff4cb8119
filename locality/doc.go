// Package locality owns locality-weighted load balancing: Istio
// localityLbSetting semantics (distribute, failover, failoverPriority) and
// Envoy's priority and weight math. It is pure: no I/O, no clocks.
package locality
