// Package eastwest owns the east-west gateway's data plane: it routes
// cross-cluster TLS by SNI without terminating it (sni parses the
// ClientHello, xdsclient keeps the routing table its control plane sends
// over ADS). The snapshots it receives are built by controlplane/xds, which
// the gateway does not link.
package eastwest
