// Package registry owns the federated service model: clusters, services,
// endpoints and localities, the signed records that make up each cluster's
// slice, the rules for merging slices by owner and version, and the bbolt
// store that keeps them across restarts.
//
// Sources live below it: registry/file for VMs and hosts, registry/kube for
// Kubernetes.
package registry
