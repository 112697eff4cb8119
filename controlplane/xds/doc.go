// Package xds builds and serves a cluster's configuration over the
// aggregated discovery service. For the east-west gateways (Build): one
// TLS-passthrough listener routing by SNI, one cluster per exported
// (service, port, subset) and its endpoints on the gateway's own network.
// For the cluster's clients (BuildClients): every service of the
// federation, split horizon (other networks through their gateways), as
// API listeners and EDS clusters that proxyless gRPC and Envoy accept.
// Priorities and weights come from package locality in both, and the
// gateway's Routes pick endpoints with the same math. Snapshots are pure
// functions of the registry view, the policies and the gateways' health.
package xds
