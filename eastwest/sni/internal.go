package sni

import (
	"fmt"
	"strings"
)

// Component is a federation endpoint behind a cluster's gateway.
type Component string

// Internal components: the control plane's gRPC API (VM agents, peer
// fetch) and its gossip stream listener.
const (
	ControlPlane Component = "controlplane"
	Gossip       Component = "gossip"
)

// InternalSuffix ends every internal name; no Istio outbound name ends so.
const InternalSuffix = ".federate.internal"

// Internal returns the server name that reaches component of cluster
// through that cluster's gateway: <component>.<cluster>.federate.internal.
// The name only routes; TLS peers verify each other by SPIFFE ID.
func Internal(c Component, cluster string) string {
	return string(c) + "." + cluster + InternalSuffix
}

// ParseInternal splits an internal name into its component and cluster.
func ParseInternal(name string) (Component, string, error) {
	rest, ok := strings.CutSuffix(name, InternalSuffix)
	if !ok {
		return "", "", fmt.Errorf("%w: %q does not end in %s", ErrNotInternal, name, InternalSuffix)
	}
	c, cluster, ok := strings.Cut(rest, ".")
	if !ok || !isDNSLabel(cluster) {
		return "", "", fmt.Errorf("%w: %q: want <component>.<cluster>%s", ErrNotInternal, name, InternalSuffix)
	}
	switch Component(c) {
	case ControlPlane, Gossip:
		return Component(c), cluster, nil
	}
	return "", "", fmt.Errorf("%w: unknown component %q in %q", ErrNotInternal, c, name)
}
