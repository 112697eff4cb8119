package member

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/retry"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// subscribeLoop keeps a stream from the hub open, resuming from our
// versions after every reconnect.
func (m *Member) subscribeLoop(ctx context.Context) error {
	backoff := newBackoff()
	for {
		err := m.subscribe(ctx, backoff)
		m.mu.Lock()
		m.hubSynced, m.hubReplica = false, ""
		m.mu.Unlock()
		m.dropStaleHubConns()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errImportsChanged) {
			continue // subscribe again at once, for the new imports
		}
		if m.hubRefused(err) {
			if !waitRefused(ctx, nil) {
				return nil
			}
			continue
		}
		m.log.Warn("hub stream ended; reconnecting", "hub", m.hubAddr(), "err", err)
		if errors.Is(err, errReplicaLeft) {
			continue // another replica is tried first, at once
		}
		if !backoff.Wait(ctx, nil) {
			return nil
		}
	}
}

func (m *Member) subscribe(ctx context.Context, backoff *retry.Backoff) error {
	conn, err := m.conn(m.hubAddr(), membership.HubID(m.td))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	m.mu.Lock()
	scope := m.scope
	m.restream = cancel
	m.mu.Unlock()
	req := m.subscription(scope)
	// Wait for the hub instead of failing fast: the stream resumes as soon
	// as a restarted hub accepts connections, not after our retry backoff.
	waiting := time.AfterFunc(membership.CallTimeout, func() {
		m.log.Warn("hub not reachable; still trying", "hub", m.hubAddr(), "state", conn.GetState().String())
	})
	var replica peer.Peer
	stream, err := hubpb.NewHubClient(conn).Subscribe(ctx, req, grpc.WaitForReady(true), grpc.Peer(&replica))
	waiting.Stop()
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(context.Cause(ctx), errImportsChanged) {
			return errImportsChanged
		}
		if err != nil {
			if status.Code(err) == codes.Unavailable && replica.Addr != nil && m.leaveReplica(replica.Addr.String()) {
				return fmt.Errorf("%w: %w", errReplicaLeft, err)
			}
			return err
		}
		m.mu.Lock()
		m.hubHeard = m.cfg.Now()
		m.mu.Unlock()
		m.applyRemovals(ctx, resp.GetRemovals())
		m.applyExternal(resp.GetExternalBundles())
		m.learnHubs(ctx, resp.GetHubs())
		m.receive(ctx, resp.GetRecords(), "hub")
		m.advance(ctx, resp.GetSliceVersions())
		if resp.GetSynced() {
			m.markHeld(ctx, scope)
			backoff.Reset()
			m.mu.Lock()
			m.hubSynced = true
			m.refusedLogged = time.Time{}
			// grpc.Peer fills replica only when the stream ends.
			if p, ok := peer.FromContext(stream.Context()); ok && p.Addr != nil {
				m.hubReplica = p.Addr.String()
			}
			m.federated.Store(true)
			// The hub says what it holds of our slice: a hub restored from
			// an older file gets everything newer.
			m.acked = resp.GetYourVersion()
			m.mu.Unlock()
			signal(m.publishNow)
			m.gossip.RejoinNow() // the hub may have restarted as a new gossip node
		}
	}
}

// receive verifies, persists and applies records of other clusters.
func (m *Member) receive(ctx context.Context, signed []*registrypb.SignedRecord, from string) {
	var recs []registry.Verified
	for _, sr := range signed {
		rec, err := m.verifier.Verify(sr)
		if err != nil {
			m.log.Warn("dropped a record that does not verify", "from", from, "err", err)
			continue
		}
		if rec.GetCluster() == m.cfg.Cluster {
			continue // we are the authority on our own slice
		}
		recs = append(recs, registry.Verified{Record: rec, Signed: sr})
	}
	if len(recs) == 0 {
		return
	}
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	// The imports are read under writeMu: records of an import dropped
	// while they were on the way must not return after its withdrawal.
	fresh := m.set.Newer(inScope(recs, m.Imports()))
	fresh = m.acceptBundles(fresh, from)
	if len(fresh) == 0 {
		return
	}
	if err := m.cfg.Store.Write(ctx, store.RecordOps(m.set, fresh)...); err != nil {
		m.storeFailedLocked("persist remote records", err)
		return
	}
	m.storeSucceedsLocked()
	// Bundles first: whoever sees the new record version also sees its bundle.
	registry.ApplyBundles(m.bundles, m.set, fresh, m.log)
	applied := m.set.Apply(fresh)
	m.federated.Store(true)
	m.mu.Lock()
	m.notifyLocked()
	m.mu.Unlock()
	if m.cfg.OnApply != nil {
		out := make([]*registry.Record, len(applied))
		for i, v := range applied {
			out[i] = v.Record
		}
		m.cfg.OnApply(out)
	}
}

// inScope keeps the records the member imports: a peer or an older hub
// sends every service.
func inScope(recs []registry.Verified, scope *registry.Scope) []registry.Verified {
	return slices.DeleteFunc(recs, func(v registry.Verified) bool { return !scope.Includes(v.Record.GetKey()) })
}

// maintainLoop tracks liveness, expires slices and renews the credential.
func (m *Member) maintainLoop(ctx context.Context) error {
	interval := min(time.Second, m.live.Timers().StaleAfter/4)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	states := make(map[string]string)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		m.maintained.Beat()
		now := m.cfg.Now()
		m.live.Observe(m.gossip.Members(), now)
		changed := false
		for _, c := range m.set.Clusters() {
			if c == m.cfg.Cluster {
				continue
			}
			if m.live.Expired(c, now) {
				m.expire(ctx, c)
				changed = true
				continue
			}
			st, _ := m.live.State(c, now)
			if states[c] != st {
				if states[c] != "" {
					m.log.Info("cluster state changed", "peer", c, "from", states[c], "to", st)
				}
				changed = changed || gossip.Unhealthy(st) != gossip.Unhealthy(states[c])
				states[c] = st
			}
		}
		if changed {
			m.mu.Lock()
			m.notifyLocked()
			m.mu.Unlock()
		}
		m.renewIfDue(ctx, now)
		m.advanceRotation(ctx)
	}
}

func (m *Member) expire(ctx context.Context, cluster string) {
	if m.dropCluster(ctx, cluster) {
		m.log.Warn("cluster expired: its slice and bundle are removed", "peer", cluster)
	}
}

// dropCluster forgets a cluster's slice and bundle, on disk and in memory.
func (m *Member) dropCluster(ctx context.Context, cluster string, extra ...store.Op) bool {
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	ops := append([]store.Op{{Bucket: store.BucketRecords, Key: cluster + "\x00", Prefix: true}}, extra...)
	if err := m.cfg.Store.Write(ctx, ops...); err != nil {
		m.storeFailedLocked("drop cluster "+cluster, err)
		return false
	}
	m.storeSucceedsLocked()
	if e := m.set.Entries(cluster)[registry.InfoKey]; e != nil && e.Info != nil {
		if td, err := spiffeid.TrustDomainFromString(e.Info.GetTrustDomain()); err == nil {
			m.bundles.Remove(td)
		}
	}
	removed := m.set.Remove(cluster)
	m.live.Forget(cluster)
	m.mu.Lock()
	m.notifyLocked()
	m.mu.Unlock()
	return removed
}

// renewIfDue renews the cluster credential after half its lifetime, or
// at once when it lacks a serving name (once: names the hub refuses wait
// for the next renewal).
func (m *Member) renewIfDue(ctx context.Context, now time.Time) {
	leaf := m.cfg.Credential.Leaf()
	namesDue := !m.namesAsked && !hasNames(leaf, append([]string{sni.Internal(sni.ControlPlane, m.cfg.Cluster)}, m.cfg.ServingNames...))
	if now.Before(trust.RenewAt(leaf)) && !namesDue || now.Before(m.renewRetryAt) {
		return
	}
	key, err := trust.GenerateKey()
	if err != nil {
		return
	}
	csr, err := trust.NewCSR(key, m.cfg.ServingNames...)
	if err != nil {
		return
	}
	conn, err := m.conn(m.hubAddr(), membership.HubID(m.td))
	if err != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, membership.CallTimeout)
	defer cancel()
	resp, err := hubpb.NewHubClient(conn).Renew(cctx, &hubpb.RenewRequest{Csr: csr})
	if status.Code(err) == codes.InvalidArgument && namesDue {
		m.namesAsked = true
		m.log.Error("the hub refused the serving names; fix --serving-name", "names", m.cfg.ServingNames, "err", status.Convert(err).Message())
		return
	}
	if err != nil {
		wait := m.renewRetry.Next()
		m.renewRetryAt = now.Add(wait)
		m.log.Warn("credential renewal failed; retrying", "expires", leaf.NotAfter, "retry_in", wait, "err", err)
		return
	}
	m.renewRetry.Reset()
	m.renewRetryAt = time.Time{}
	certs, err := trust.ParseCertificates(resp.GetCertificates())
	if err != nil {
		m.log.Error("renewed credential is malformed", "err", err)
		return
	}
	if err := m.cfg.Credential.Set(certs, key); err != nil {
		m.log.Error("renewed credential", "err", err)
		return
	}
	if m.cfg.CredentialPath != "" {
		if err := m.cfg.Credential.Save(m.cfg.CredentialPath); err != nil {
			m.log.Error("save renewed credential", "path", m.cfg.CredentialPath, "err", err)
		}
	}
	m.namesAsked = true
	m.log.Info("cluster credential renewed", "expires", certs[0].NotAfter, "names", trust.CertificateNames(certs[0]))
}

// hasNames reports whether cert carries every name (DNS or IP).
func hasNames(cert *x509.Certificate, names []string) bool {
	have := trust.CertificateNames(cert)
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			n = ip.String()
		}
		if !slices.Contains(have, n) {
			return false
		}
	}
	return true
}

// conn returns a cached mTLS connection to addr that accepts only id.
func (m *Member) conn(addr string, id spiffeid.ID) (*grpc.ClientConn, error) {
	key := addr + "|" + id.String()
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.conns[key]; ok {
		return c, nil
	}
	c, err := m.newConn(addr, id)
	if err != nil {
		return nil, err
	}
	m.conns[key] = c
	return c, nil
}

// newConn returns a new mTLS connection to addr that accepts only id.
func (m *Member) newConn(addr string, id spiffeid.ID) (*grpc.ClientConn, error) {
	tlsConf := trust.ClientTLS(m.cfg.Credential, trust.Bundle(m.td, m.cfg.CA...), tlsconfig.AuthorizeID(id))
	if cluster := membership.ClusterOf(m.td, id); cluster != "" {
		// A peer behind its gateway is reached by this name; a peer
		// reached directly ignores it.
		tlsConf.ServerName = sni.Internal(sni.ControlPlane, cluster)
	}
	// A hub given as every replica's address fails over between them.
	c, err := membership.NewHubClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(membership.MaxMessageBytes), grpc.MaxCallSendMsgSize(membership.MaxMessageBytes)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxConnectBackoff},
			MinConnectTimeout: membership.CallTimeout,
		}),
		membership.ClientKeepalive(),
	)
	if err != nil {
		return nil, fmt.Errorf("member: dial %s: %w", addr, err)
	}
	return c, nil
}

// storeFailedLocked logs a failed store write of remote state once, with
// what to do, until a write succeeds: the hub stream and gossip retry it
// every few hundred milliseconds. m.writeMu must be held.
func (m *Member) storeFailedLocked(what string, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, store.ErrClosed) {
		return
	}
	if m.storeFailing == nil {
		m.log.Error("store write failed: remote changes wait, and the last stored state is served, until writes succeed; "+
			"free space on the disk of the store (other failures are in err)", "what", what, "store", m.cfg.Store.Path(), "err", err)
	}
	m.storeFailing = err
}

// storeSucceedsLocked notes a store write that succeeded. m.writeMu must
// be held.
func (m *Member) storeSucceedsLocked() {
	if m.storeFailing != nil {
		m.log.Info("store writes succeed again", "store", m.cfg.Store.Path())
		m.storeFailing = nil
	}
}
