# shellcheck shell=bash
# Sourced by the gateway's cost scripts: haproxy_config THREADS ADDR NAME
# BACKEND prints the HAProxy they measure the gateway against, routing
# the ClientHello's server name NAME on ADDR to BACKEND without
# terminating TLS, as BenchmarkGatewayVsPeers configures it.
haproxy_config() {
	cat <<CFG
global
  nbthread $1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend ew
  bind $2
  tcp-request inspect-delay 5s
  tcp-request content accept if { req.ssl_hello_type 1 }
  use_backend svc_a if { req.ssl_sni -i $3 }
backend svc_a
  server s1 $4
CFG
}
