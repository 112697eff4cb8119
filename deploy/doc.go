// Package deploy holds the Kubernetes manifests (kustomize bases for the
// hub, a cluster's control plane and gateway, RBAC and CRDs) and the VM
// packages. Its tests render every base to golden files and check each
// manifest with a server-side dry run on a real kube-apiserver.
package deploy
