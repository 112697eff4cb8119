// Package registry owns the federated service model: clusters, services,
// endpoints and localities, the signed records that make up each cluster's
// slice, and the rules for merging slices by owner and version.
//
// Below it: registry/store keeps records in bbolt across restarts (binaries
// that must not link bbolt use the model alone), and the sources
// registry/file (VMs and hosts) and registry/kube (Kubernetes).
package registry
