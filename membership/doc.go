// Package membership is who belongs to a federation and how its members
// reach each other: the SPIFFE IDs of the hub, the admin and each cluster,
// one-time join tokens, 'federate join' and the membership it leaves in a
// cluster's data directory, and the gRPC conventions every member follows
// (mTLS dialing, keepalive, message and batch limits, graceful stop).
package membership
