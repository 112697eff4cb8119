// Package eastwest owns the east-west gateway: the data plane that routes
// cross-cluster TLS by SNI without terminating it, and the xDS snapshot
// builder and server that program it from the registry.
package eastwest
