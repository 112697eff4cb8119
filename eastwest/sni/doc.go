// Package sni reads the server name a TLS client asks for and knows the
// names the federation routes by.
//
// ParseClientHello extracts the server_name (SNI) and ALPN extensions from
// the first bytes of a TLS connection without terminating TLS: the east-west
// gateway peeks at them, routes, and forwards the same bytes untouched.
// ParseIstio and Istio.String read and write Istio's outbound form,
// outbound_.<port>_.<subset>_.<fqdn>, which sidecars send as SNI when they
// reach a service in another network through its gateway.
//
// The package is public because the agent and the xDS builder format the
// same names the gateway parses.
package sni
