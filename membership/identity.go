package membership

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

// ClusterOf returns the cluster an ID names, or "".
func ClusterOf(td spiffeid.TrustDomain, id spiffeid.ID) string {
	if !id.MemberOf(td) {
		return ""
	}
	name, ok := strings.CutPrefix(id.Path(), registry.ClusterIDPath)
	if !ok || registry.ValidClusterName(name) != nil {
		return ""
	}
	return name
}

// AuthorizeMember accepts the hub, the admin and any cluster of the mesh.
func AuthorizeMember(td spiffeid.TrustDomain) tlsconfig.Authorizer {
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if id == HubID(td) || id == AdminID(td) || ClusterOf(td, id) != "" {
			return nil
		}
		return fmt.Errorf("membership: %s is not a member of mesh %s", id, td.Name())
	}
}

// authorizeControlPlane accepts only cluster's control plane.
func authorizeControlPlane(td spiffeid.TrustDomain, cluster string) tlsconfig.Authorizer {
	want := ClusterID(td, cluster)
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if id != want {
			return fmt.Errorf("membership: the server is %s, not the control plane of cluster %q", id, cluster)
		}
		return nil
	}
}

// Caller identifies a gRPC Caller: its cluster name (empty for the hub and
// the admin) and whether it is the admin.
type Caller struct {
	ID      spiffeid.ID
	Cluster string
	Admin   bool
	Hub     bool
}

// Identify checks that the Caller is a member of the mesh whose credential
// was not revoked by a removal.
func Identify(ctx context.Context, td spiffeid.TrustDomain, v *registry.Verifier) (Caller, error) {
	cert, err := trust.PeerCertificate(ctx)
	if err != nil {
		return Caller{}, status.Error(codes.Unauthenticated, "a mesh credential is required: join the cluster first ('federate join')")
	}
	id, err := trust.PeerID(ctx)
	if err != nil {
		return Caller{}, status.Error(codes.Unauthenticated, err.Error())
	}
	c := Caller{ID: id, Cluster: ClusterOf(td, id), Admin: id == AdminID(td), Hub: id == HubID(td)}
	if c.Cluster == "" && !c.Admin && !c.Hub {
		return Caller{}, status.Errorf(codes.PermissionDenied, "%s is not a member of mesh %s", id, td.Name())
	}
	if c.Cluster != "" && v.RevokedCredential(c.Cluster, cert) {
		return Caller{}, status.Errorf(codes.PermissionDenied, "cluster %q was removed from the federation; join again with a new token", c.Cluster)
	}
	return c, nil
}

// AuthorizeGossip accepts gossip peers: the hub and the mesh's clusters.
func AuthorizeGossip(td spiffeid.TrustDomain) tlsconfig.Authorizer {
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if id == HubID(td) || ClusterOf(td, id) != "" {
			return nil
		}
		return fmt.Errorf("membership: %s may not gossip in mesh %s", id, td.Name())
	}
}
