// Package workloads serves a control plane's VM agents, as Istio's
// WorkloadGroup auto-registration does: bootstrap tokens traded for SVIDs,
// SVID renewal with the SVID itself, WorkloadEntries of connected agents
// with their probed health, merged into the cluster's services, and each
// agent's configuration (bundles, inbound ports, outbound targets).
package workloads
