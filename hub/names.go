package hub

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
)

// credentialNames are the SANs of a cluster credential besides its SPIFFE
// ID: first the one trust domain the cluster may speak for (members read
// it there), then the control plane's internal name, which clients verify
// when they reach it through the gateway, then the names and addresses
// the cluster asks for in its request (--serving-name), which clients
// verify when they dial the control plane by them. The internal names of
// the federation are the hub's to give: a request for another is refused.
func credentialNames(cluster, td string, csr []byte) ([]string, error) {
	requested, err := trust.CSRNames(csr)
	if err != nil {
		return nil, err
	}
	if len(requested) > membership.MaxServingNames {
		return nil, fmt.Errorf("the request asks for %d names; the limit is %d", len(requested), membership.MaxServingNames)
	}
	internal := sni.Internal(sni.ControlPlane, cluster)
	names := []string{td, internal}
	for _, n := range requested {
		if n == internal {
			continue
		}
		if err := membership.CheckServingName(n); err != nil {
			return nil, err
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names, nil
}

// metaServingNamePrefix keys, in BucketMeta, the cluster that holds each
// serving name. A proxyless application checks its control plane by the
// name it dials, against the mesh CA that signs every cluster's
// credential: a name is worth only as much as the promise that one
// cluster holds it. It holds it until it is removed from the federation.
const metaServingNamePrefix = "servingnames/"

// claimServingNames makes the serving names of a credential (names after
// the trust domain and the internal name) cluster's, or refuses one that
// another cluster holds. Concurrent claims of one name, on any replicas,
// leave it with one cluster.
func (s *Server) claimServingNames(ctx context.Context, cluster string, names []string) error {
	for _, n := range names[2:] {
		key := metaServingNamePrefix + n
		for {
			holder, err := s.backend.Get(ctx, store.BucketMeta, key)
			if err != nil {
				return status.Errorf(codes.Unavailable, "read the holder of serving name %s: %v", n, err)
			}
			if holder != nil {
				if string(holder) == cluster {
					break
				}
				return status.Errorf(codes.PermissionDenied, "serving name %s belongs to cluster %s: an application that dials it would take this credential for that cluster's control plane; ask for other names (--serving-name), or remove cluster %s from the federation first", n, holder, holder)
			}
			won, err := s.writeIf(ctx, store.BucketMeta, key, nil, store.Op{Bucket: store.BucketMeta, Key: key, Value: []byte(cluster)})
			if err != nil {
				return status.Errorf(codes.Unavailable, "record serving name %s: %v", n, err)
			}
			if won {
				break
			}
			// Claimed meanwhile: whose is it?
		}
	}
	return nil
}

// servingNameOps deletes what says that cluster holds serving names, at
// its removal.
func (s *Server) servingNameOps(ctx context.Context, cluster string) ([]store.Op, error) {
	var ops []store.Op
	err := s.backend.ForEach(ctx, store.BucketMeta, func(key string, value []byte) error {
		if strings.HasPrefix(key, metaServingNamePrefix) && string(value) == cluster {
			ops = append(ops, store.Op{Bucket: store.BucketMeta, Key: key})
		}
		return nil
	})
	return ops, err
}
