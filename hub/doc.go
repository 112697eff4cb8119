// Package hub is the federation itself: the gRPC API (hubpb), the hub server
// that admits clusters and relays their slices, the member that runs inside
// every control plane (publish, subscribe, peer fetch), the gossip layer that
// carries liveness and version digests, and the join tokens.
package hub
