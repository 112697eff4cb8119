// Package gossip is the memberlist layer the hub and the control planes
// share: small digests (slice versions, bundle sequences, gateway and API
// addresses) in node meta, push-pull and re-queued broadcasts, carried over
// mTLS TCP streams that a cluster's east-west gateway routes by internal
// server name; and liveness, which turns gossip confirmations into the
// alive, suspect, stale and dead states 'federate status' shows.
package gossip
