package hub

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Identities in the mesh's own trust domain.

// HubID is the hub's SPIFFE ID.
func HubID(td spiffeid.TrustDomain) spiffeid.ID { return spiffeid.RequireFromPath(td, "/hub") }

// AdminID is the ID of the admin credential the hub writes for the CLI.
func AdminID(td spiffeid.TrustDomain) spiffeid.ID { return spiffeid.RequireFromPath(td, "/admin") }

// ClusterID is a cluster control plane's ID.
func ClusterID(td spiffeid.TrustDomain, cluster string) spiffeid.ID {
	return spiffeid.RequireFromPath(td, registry.ClusterIDPath+cluster)
}

// clusterOf returns the cluster an ID names, or "".
func clusterOf(td spiffeid.TrustDomain, id spiffeid.ID) string {
	if !id.MemberOf(td) {
		return ""
	}
	name, ok := strings.CutPrefix(id.Path(), registry.ClusterIDPath)
	if !ok || registry.ValidClusterName(name) != nil {
		return ""
	}
	return name
}

// authorizeMember accepts the hub, the admin and any cluster of the mesh.
func authorizeMember(td spiffeid.TrustDomain) tlsconfig.Authorizer {
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if id == HubID(td) || id == AdminID(td) || clusterOf(td, id) != "" {
			return nil
		}
		return fmt.Errorf("hub: %s is not a member of mesh %s", id, td.Name())
	}
}

// caller identifies a gRPC caller: its cluster name (empty for the hub and
// the admin) and whether it is the admin.
type caller struct {
	id      spiffeid.ID
	cluster string
	admin   bool
	hub     bool
}

// identify checks that the caller is a member of the mesh whose credential
// was not revoked by a removal.
func identify(ctx context.Context, td spiffeid.TrustDomain, v *registry.Verifier) (caller, error) {
	cert, err := trust.PeerCertificate(ctx)
	if err != nil {
		return caller{}, status.Error(codes.Unauthenticated, "a mesh credential is required: join the cluster first ('federate join')")
	}
	id, err := trust.PeerID(ctx)
	if err != nil {
		return caller{}, status.Error(codes.Unauthenticated, err.Error())
	}
	c := caller{id: id, cluster: clusterOf(td, id), admin: id == AdminID(td), hub: id == HubID(td)}
	if c.cluster == "" && !c.admin && !c.hub {
		return caller{}, status.Errorf(codes.PermissionDenied, "%s is not a member of mesh %s", id, td.Name())
	}
	if c.cluster != "" && v.RevokedCredential(c.cluster, cert) {
		return caller{}, status.Errorf(codes.PermissionDenied, "cluster %q was removed from the federation; join again with a new token", c.cluster)
	}
	return c, nil
}

// authorizeGossip accepts gossip peers: the hub and the mesh's clusters.
func authorizeGossip(td spiffeid.TrustDomain) tlsconfig.Authorizer {
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if id == HubID(td) || clusterOf(td, id) != "" {
			return nil
		}
		return fmt.Errorf("hub: %s may not gossip in mesh %s", id, td.Name())
	}
}
