package xds

import (
	"fmt"
	"strings"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// The node groups: every gateway of a cluster gets one snapshot, and the
// clients of each namespace another.
const (
	group             = "eastwest-gateways"
	clientGroupPrefix = "clients/"
)

// ClientNodePrefix starts the node ID of a client (Istio's node type for
// sidecars and proxyless gRPC); any other node is a gateway.
const ClientNodePrefix = "sidecar~"

// namespaceKey is the node metadata field in which the server tells the
// cache which namespace a client's configuration is for; whatever a client
// sends there is replaced before the cache sees it.
const namespaceKey = "federate.internal/namespace"

// IsClientNode reports whether a node ID is a client's.
func IsClientNode(id string) bool { return strings.HasPrefix(id, ClientNodePrefix) }

func clientGroup(namespace string) string { return clientGroupPrefix + namespace }

// nodeGroups sorts nodes into their groups.
type nodeGroups struct{}

func (nodeGroups) ID(n *corepb.Node) string {
	if !IsClientNode(n.GetId()) {
		return group
	}
	return clientGroup(n.GetMetadata().GetFields()[namespaceKey].GetStringValue())
}

// withNamespace returns a copy of n that the cache files under namespace.
func withNamespace(n *corepb.Node, namespace string) *corepb.Node {
	c := proto.Clone(n).(*corepb.Node)
	if c.Metadata == nil {
		c.Metadata = &structpb.Struct{}
	}
	if c.Metadata.Fields == nil {
		c.Metadata.Fields = make(map[string]*structpb.Value)
	}
	c.Metadata.Fields[namespaceKey] = structpb.NewStringValue(namespace)
	return c
}

// NodeNamespace returns the namespace an Istio node ID names,
// sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local, or "" if
// it names none. Naming two is an error.
func NodeNamespace(id string) (string, error) {
	parts := strings.Split(id, "~")
	if len(parts) != 4 {
		return "", nil
	}
	var fromID, fromDomain string
	if _, ns, ok := strings.Cut(parts[2], "."); ok {
		fromID = ns
	}
	if ns, _, ok := strings.Cut(parts[3], ".svc"); ok {
		fromDomain = ns
	}
	if fromID != "" && fromDomain != "" && fromID != fromDomain {
		return "", fmt.Errorf("xds: node ID %q names namespace %q in its ID and %q in its domain: use sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local", id, fromID, fromDomain)
	}
	if fromDomain != "" {
		return fromDomain, nil
	}
	return fromID, nil
}
