// Package routing keeps a control plane's xDS current: for its east-west
// gateways and for its clients (VM agents, proxyless gRPC), built from the
// registry view, the DestinationRules of the config directory and the
// failure domains (gossip liveness and active probes of remote gateways).
package routing
