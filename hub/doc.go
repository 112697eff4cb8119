// Package hub is the federation itself: the gRPC API (hubpb), the hub server
// that admits clusters and relays their slices, the member that runs inside
// every control plane (publish, subscribe, peer fetch), the gossip layer that
// carries liveness and version digests, the join tokens, and the routing
// that turns the view, DestinationRules and probes of remote gateways into
// the gateways' and the clients' xDS.
package hub
