// Package controlplane is a cluster's control plane as a library: New
// checks a Config, and Run assembles and runs the member of the federation
// (package member), the source of the cluster's services (the config
// directory, the Kubernetes API, or a caller's), the VM workloads
// (controlplane/workloads), and the xDS of its gateways and clients
// (controlplane/routing over controlplane/xds), waiting for every part when
// it stops. With LeaderElection, replicas share a Kubernetes Lease and only
// the holder runs any of that (leader.go); Live and Readiness answer the
// probes. cmd/federate only parses flags into a Config.
package controlplane
