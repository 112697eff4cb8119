// Package locality owns locality-weighted load balancing: Istio
// localityLbSetting semantics (distribute, failover, failoverPriority, read
// from DestinationRules), Envoy's priority and weight math, split-horizon
// endpoints behind gateways, and the in-process Picker that the gateway and
// the agent use. One implementation drives both the generated xDS and the
// pickers. It is pure: no I/O, no clocks.
package locality
