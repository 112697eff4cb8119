// Package xds builds and serves the east-west gateway's configuration over
// the aggregated discovery service: one TLS-passthrough listener routing by
// SNI, one cluster per exported (service, port, subset) and its endpoints on
// the gateway's own network. The snapshot is a pure function of the
// registry view, valid for Envoy as well as for federate's own gateway.
package xds
