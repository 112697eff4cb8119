package hub

import (
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// metaCredentialPrefix keys, in the meta bucket, the credentials issued to
// each cluster: credentials/<cluster>/<serial> -> issuedCredential. They
// let a removal say what it revoked, and show that a cluster which never
// published was admitted.
const metaCredentialPrefix = "credentials/"

type issuedCredential struct {
	Serial    string    `json:"serial"`
	IssuedAt  time.Time `json:"issuedAt"`
	ExpiresAt time.Time `json:"expiresAt"`
}

func credentialKey(cluster, serial string) string {
	return metaCredentialPrefix + cluster + "/" + serial
}

// recordCredential is the store op that remembers a credential issued to
// cluster.
func recordCredential(cluster string, cert *x509.Certificate, now time.Time) store.Op {
	ic := issuedCredential{Serial: serialOf(cert), IssuedAt: now.UTC(), ExpiresAt: cert.NotAfter.UTC()}
	data, _ := json.Marshal(ic)
	return store.Op{Bucket: store.BucketMeta, Key: credentialKey(cluster, ic.Serial), Value: data}
}

// issuedCredentials lists the credentials issued to cluster, oldest first.
func (s *Server) issuedCredentials(ctx context.Context, cluster string) ([]issuedCredential, error) {
	prefix := metaCredentialPrefix + cluster + "/"
	var out []issuedCredential
	err := s.backend.ForEach(ctx, store.BucketMeta, func(key string, value []byte) error {
		var ic issuedCredential
		if strings.HasPrefix(key, prefix) && json.Unmarshal(value, &ic) == nil {
			out = append(out, ic)
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].IssuedAt.Before(out[j].IssuedAt) })
	return out, err
}

// expiredCredentialOps deletes the records of cluster's expired credentials.
func expiredCredentialOps(cluster string, issued []issuedCredential, now time.Time) []store.Op {
	var ops []store.Op
	for _, ic := range issued {
		if ic.ExpiresAt.Before(now) {
			ops = append(ops, store.Op{Bucket: store.BucketMeta, Key: credentialKey(cluster, ic.Serial)})
		}
	}
	return ops
}

// clusterTokens reads cluster's join tokens: whether one was used after
// its last removal (it holds a credential whether or not it published;
// hubs before the credential records knew a cluster only so), and the IDs
// of the unused ones.
func (s *Server) clusterTokens(ctx context.Context, cluster string, removedAt time.Time) (admitted bool, unused []string, err error) {
	err = s.backend.ForEach(ctx, store.BucketTokens, func(id string, value []byte) error {
		var rec tokenRecord
		if json.Unmarshal(value, &rec) != nil || rec.Cluster != cluster {
			return nil
		}
		if rec.UsedAt.IsZero() {
			unused = append(unused, id)
		} else if rec.UsedAt.After(removedAt) {
			admitted = true
		}
		return nil
	})
	return admitted, unused, err
}

// RemoveCluster withdraws a cluster's slice and bundle everywhere, refuses
// every credential it was issued so far, and closes its open streams. A
// cluster that joined but never published is removed too.
func (s *Server) RemoveCluster(ctx context.Context, req *hubpb.RemoveClusterRequest) (*hubpb.RemoveClusterResponse, error) {
	c, err := s.identify(ctx)
	if err != nil {
		return nil, err
	}
	if !c.Admin {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not remove clusters; use the hub's %s", c.ID, AdminCredFile)
	}
	cluster := req.GetCluster()
	if err := registry.ValidClusterName(cluster); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	issued, err := s.issuedCredentials(ctx, cluster)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read credentials of %q: %v", cluster, err)
	}
	unlock := s.clusterMu.mustLock(cluster)
	s.pubMu.Lock()
	at := s.cfg.Now()
	resp, err := s.removeLocked(ctx, cluster, issued, at)
	s.pubMu.Unlock()
	unlock()
	if err != nil {
		return nil, err
	}
	// The removal reaches every member, the removed one too (it logs that
	// it must join again); then the cluster's own streams end, and its
	// credential is refused when it reconnects.
	s.broadcast(&hubpb.SubscribeResponse{Removals: []*hubpb.Removal{{Cluster: cluster, RemovedAt: at.UnixNano()}}}, "")
	resp.StreamsClosed = int32(s.endStreams(cluster, removedError(cluster)))
	s.log.Warn("cluster removed from the federation", "cluster", cluster, "by", c.ID,
		"credentials_revoked", len(resp.GetCredentials()), "streams_closed", resp.GetStreamsClosed(), "services_withdrawn", resp.GetServicesWithdrawn())
	return resp, nil
}

// removeLocked persists and applies a removal; the caller holds pubMu.
func (s *Server) removeLocked(ctx context.Context, cluster string, issued []issuedCredential, at time.Time) (*hubpb.RemoveClusterResponse, error) {
	entries := s.set.Entries(cluster)
	admitted, unused, err := s.clusterTokens(ctx, cluster, s.removed[cluster])
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read tokens: %v", err)
	}
	if entries == nil && len(issued) == 0 && !admitted {
		return nil, status.Errorf(codes.NotFound, "no cluster %q has joined the federation since its last removal; 'federate status' lists the clusters", cluster)
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(at.UnixNano()))
	ops := []store.Op{
		{Bucket: store.BucketRecords, Key: cluster + "\x00", Prefix: true},
		{Bucket: store.BucketMeta, Key: store.MetaRemovedPrefix + cluster, Value: b[:]},
		{Bucket: store.BucketMeta, Key: metaCredentialPrefix + cluster + "/", Prefix: true},
	}
	// A token made before the removal must not bring the cluster back.
	for _, id := range unused {
		ops = append(ops, store.Op{Bucket: store.BucketTokens, Key: id})
	}
	names, err := s.servingNameOps(ctx, cluster)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read serving names: %v", err)
	}
	ops = append(ops, names...)
	if err := s.write(ctx, ops...); err != nil {
		return nil, status.Errorf(codes.Unavailable, "store removal: %v", err)
	}
	resp := &hubpb.RemoveClusterResponse{RemovedAt: at.UnixNano(), TokensRevoked: int32(len(unused))}
	for k, e := range entries {
		if k != registry.InfoKey && !e.Deleted {
			resp.ServicesWithdrawn++
		}
	}
	for _, ic := range issued {
		if ic.ExpiresAt.After(at) {
			resp.Credentials = append(resp.Credentials, &hubpb.IssuedCredential{Serial: ic.Serial, IssuedAt: ic.IssuedAt.Unix(), ExpiresAt: ic.ExpiresAt.Unix()})
		}
	}
	s.forgetCluster(cluster, at)
	return resp, nil
}

// forgetCluster drops a removed cluster from memory and refuses its
// credentials issued until at; the caller holds pubMu.
func (s *Server) forgetCluster(cluster string, at time.Time) {
	if e := s.set.Entries(cluster)[registry.InfoKey]; e != nil && e.Info != nil {
		if td, err := spiffeid.TrustDomainFromString(e.Info.GetTrustDomain()); err == nil {
			s.bundles.Remove(td)
		}
	}
	s.set.Remove(cluster)
	s.live.Forget(cluster)
	s.removed[cluster] = at
	s.verifier.Revoke(cluster, at)
}

// removedError ends a removed cluster's streams.
func removedError(cluster string) error {
	return status.Errorf(codes.PermissionDenied, "cluster %q was removed from the federation; join again with a new token", cluster)
}

// issueTime is when a new credential of cluster counts as issued: now, or
// just after the cluster's last removal. Certificates count time in whole
// seconds, so one issued in the second of a removal would count as revoked
// by it; it is valid at once all the same (trust.Backdate).
func (s *Server) issueTime(cluster string, now time.Time) time.Time {
	s.pubMu.Lock()
	at, ok := s.removed[cluster]
	s.pubMu.Unlock()
	if next := at.Truncate(time.Second).Add(time.Second); ok && now.Before(next) {
		return next
	}
	return now
}

// endStreams ends every open stream of cluster with err and says how many.
func (s *Server) endStreams(cluster string, err error) int {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	n := 0
	for sub := range s.subs {
		if sub.cluster == cluster && sub.end(err) {
			n++
		}
	}
	return n
}

// serialOf is how a credential's serial is shown: hex, as 'openssl x509
// -serial' prints it.
func serialOf(cert *x509.Certificate) string { return fmt.Sprintf("%X", cert.SerialNumber) }
