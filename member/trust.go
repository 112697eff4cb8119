package member

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
)

const (
	metaAuthority = AuthorityKey
	rotationProbe = 2 * time.Second
)

// AuthorityKey is the store's meta key of the cluster CA's state (without
// a plug-in CA), which a control plane may seed before the member starts.
const AuthorityKey = "authority"

// Bundles returns every federated trust domain's bundle, kept current. It
// is what TLS configurations of gateways and agents verify peers against.
func (m *Member) Bundles() *trust.BundleSet { return m.bundles }

// Authority returns the cluster's workload CA; valid once Ready.
func (m *Member) Authority() *trust.Authority { return m.authority }

// loadTrust restores or creates the cluster's CA, and the bundles and
// removals the store knows.
func (m *Member) loadTrust(ctx context.Context, recs []registry.Verified) error {
	td := spiffeid.RequireTrustDomainFromString(m.cfg.TrustDomain)
	switch {
	case m.cfg.PluginCADir != "":
		a, err := trust.LoadPluginAuthority(td, m.cfg.PluginCADir, m.cfg.Now)
		if err != nil {
			return err
		}
		m.authority = a
	default:
		data, err := m.cfg.Store.Get(store.BucketMeta, metaAuthority)
		if err != nil {
			return err
		}
		if data != nil {
			if m.authority, err = trust.LoadAuthority(td, data, m.cfg.Now); err != nil {
				return fmt.Errorf("member: CA state in %s: %w", m.cfg.Store.Path(), err)
			}
		} else {
			if m.authority, err = trust.NewAuthority(td, m.cfg.Now); err != nil {
				return err
			}
			m.log.Info("created the cluster CA", "trust_domain", td)
		}
	}
	if m.cfg.MaxSVIDTTL > 0 {
		m.authority.SetMaxTTL(m.cfg.MaxSVIDTTL)
	}
	if m.cfg.BundleRefreshHint > 0 {
		m.authority.SetRefreshHint(m.cfg.BundleRefreshHint)
	}
	if err := m.saveAuthority(ctx); err != nil {
		return err
	}
	if _, err := m.bundles.Update(m.authority.Bundle()); err != nil {
		return err
	}
	var remote []registry.Verified
	for _, v := range recs {
		if v.Record.GetCluster() != m.cfg.Cluster {
			remote = append(remote, v)
		}
	}
	registry.ApplyBundles(m.bundles, m.set, remote, m.log)
	return m.cfg.Store.ForEach(store.BucketMeta, func(key string, value []byte) error {
		if cluster, ok := strings.CutPrefix(key, store.MetaRemovedPrefix); ok && len(value) == 8 {
			m.verifier.Revoke(cluster, time.Unix(0, int64(binary.BigEndian.Uint64(value))))
		}
		return nil
	})
}

func (m *Member) saveAuthority(ctx context.Context) error {
	if m.cfg.PluginCADir != "" {
		return nil
	}
	data, err := m.authority.Marshal()
	if err != nil {
		return err
	}
	return m.cfg.Store.Write(ctx, store.Op{Bucket: store.BucketMeta, Key: metaAuthority, Value: data})
}

// describe completes a ClusterInfo with what only the member knows: its API
// address, trust domain, bundle and rotation phase.
func (m *Member) describe(info *registry.ClusterInfo) *registry.ClusterInfo {
	info = proto.Clone(info).(*registry.ClusterInfo)
	if info.ApiAddress == "" {
		info.ApiAddress = m.cfg.Advertise
	}
	st := m.authority.Status()
	data, seq := m.bundleBytes()
	info.TrustDomain = m.cfg.TrustDomain
	info.Bundle, info.BundleSequence, info.RotationPhase = data, seq, st.Phase
	return info
}

// bundleBytes encodes our bundle once per sequence, so that an unchanged
// bundle never looks changed.
func (m *Member) bundleBytes() ([]byte, uint64) {
	b := m.authority.Bundle()
	seq, _ := b.SequenceNumber()
	m.bundleMu.Lock()
	defer m.bundleMu.Unlock()
	if m.bundleSeq != seq || m.bundleJSON == nil {
		data, err := b.Marshal()
		if err != nil {
			m.log.Error("encode bundle", "err", err)
			return nil, 0
		}
		m.bundleJSON, m.bundleSeq = data, seq
	}
	return m.bundleJSON, seq
}

// republishInfo re-signs our ClusterInfo after the CA changed.
func (m *Member) republishInfo(ctx context.Context) error {
	cur := m.set.Entries(m.cfg.Cluster)[registry.InfoKey]
	info := &registry.ClusterInfo{}
	if cur != nil && cur.Info != nil {
		info = cur.Info
	}
	n, err := m.updateLocal(ctx, map[string]proto.Message{registry.InfoKey: m.describe(info)}, true)
	if err != nil || n == 0 {
		return err
	}
	m.announce()
	return nil
}

// acceptBundles drops records whose bundle would replace a newer one.
func (m *Member) acceptBundles(recs []registry.Verified, from string) []registry.Verified {
	out := recs[:0:0]
	for _, v := range recs {
		if err := registry.CheckBundles(m.bundles, m.set, []registry.Verified{v}); err != nil {
			m.log.Warn("dropped a record with a stale bundle", "from", from, "err", err)
			continue
		}
		out = append(out, v)
	}
	return out
}

// applyRemovals withdraws removed clusters and refuses their old
// credentials from now on.
func (m *Member) applyRemovals(ctx context.Context, removals []*hubpb.Removal) {
	for _, r := range removals {
		at := time.Unix(0, r.GetRemovedAt())
		if !m.verifier.Revoke(r.GetCluster(), at) {
			continue // known already
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(r.GetRemovedAt()))
		meta := store.Op{Bucket: store.BucketMeta, Key: store.MetaRemovedPrefix + r.GetCluster(), Value: b[:]}
		if r.GetCluster() == m.cfg.Cluster {
			m.log.Error("this cluster was removed from the federation; join again with a new token")
			continue
		}
		// A slice signed after the removal belongs to a rejoined cluster.
		if e := m.set.Entries(r.GetCluster())[registry.InfoKey]; e != nil && !m.verifier.Revoked(e.Signed) {
			_ = m.cfg.Store.Write(ctx, meta)
			continue
		}
		if m.dropCluster(ctx, r.GetCluster(), meta) {
			m.log.Warn("cluster removed from the federation: its slice and bundle are withdrawn", "peer", r.GetCluster())
		}
	}
}

// applyExternal takes bundles the hub imported from outside the federation
// and wakes the view's watchers when one changed, so that agents and
// gateways get a new or revoked external root at once rather than at the
// next unrelated change.
func (m *Member) applyExternal(bundles []*hubpb.ExternalBundle) {
	changed := false
	for _, eb := range bundles {
		td, err := spiffeid.TrustDomainFromString(eb.GetTrustDomain())
		if err != nil {
			m.log.Warn("external bundle refused: bad trust domain", "trust_domain", eb.GetTrustDomain(), "err", err)
			continue
		}
		updated, err := m.updateExternal(td, eb.GetBundle())
		m.noteExternal(td, updated, err)
		changed = changed || updated
	}
	if changed {
		m.mu.Lock()
		m.notifyLocked()
		m.mu.Unlock()
	}
}

func (m *Member) updateExternal(td spiffeid.TrustDomain, data []byte) (bool, error) {
	b, err := trust.ParseBundle(td, data)
	if err == nil {
		var updated bool
		if updated, err = m.bundles.Update(b); err == nil {
			if updated {
				seq, _ := b.SequenceNumber()
				m.log.Info("external bundle updated", "trust_domain", td, "sequence", seq, "roots", len(b.X509Authorities()))
			}
			return updated, nil
		}
	}
	m.log.Warn("external bundle refused", "trust_domain", td, "err", err)
	return false, err
}

// noteExternal records, for status, when an imported bundle last changed
// here and the last refusal.
func (m *Member) noteExternal(td spiffeid.TrustDomain, updated bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.external[td]
	if st == nil {
		st = &externalState{}
		m.external[td] = st
	}
	if updated {
		st.updated = m.cfg.Now()
	}
	st.err = err
}

// externalStatus describes every imported trust domain this member holds.
func (m *Member) externalStatus() []*hubpb.ExternalTrustDomain {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*hubpb.ExternalTrustDomain, 0, len(m.external))
	for td, st := range m.external {
		e := &hubpb.ExternalTrustDomain{TrustDomain: td.Name()}
		if b, err := m.bundles.GetBundleForTrustDomain(td); err == nil {
			e.BundleSequence, _ = b.SequenceNumber()
			e.Roots = uint32(len(b.X509Authorities()))
		}
		if !st.updated.IsZero() {
			e.LastRefresh = st.updated.Unix()
		}
		if st.err != nil {
			e.Error = st.err.Error()
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *hubpb.ExternalTrustDomain) int {
		return strings.Compare(a.GetTrustDomain(), b.GetTrustDomain())
	})
	return out
}

// externalState is what a member knows of one imported trust domain.
type externalState struct {
	updated time.Time // when its bundle last changed here
	err     error     // the last refusal; nil once a bundle is taken
}

// startRotation adds a new root and publishes it.
func (m *Member) startRotation(ctx context.Context) error {
	if err := m.authority.AddRoot(); err != nil {
		return err
	}
	if err := m.caChanged(ctx); err != nil {
		return err
	}
	m.log.Info("root rotation started: new root published", "sequence", m.authority.Status().Sequence)
	return nil
}

// advanceRotation moves a rotation on when its condition holds: switch once
// every live member has the new root, drop the old one once its SVIDs
// expired.
func (m *Member) advanceRotation(ctx context.Context) {
	st := m.authority.Status()
	switch st.Phase {
	case trust.PhaseAdded:
		if !m.allMembersHave(ctx, st.Sequence) {
			return
		}
		if err := m.authority.SwitchSigning(); err != nil {
			m.log.Error("switch signing root", "err", err)
			return
		}
		m.log.Info("every live member trusts the new root: it signs now", "drop_after", m.authority.DropAfter())
	case trust.PhaseSwitched:
		if m.cfg.Now().Before(m.authority.DropAfter()) {
			return
		}
		if err := m.authority.DropOldRoots(); err != nil {
			m.log.Error("drop old root", "err", err)
			return
		}
		m.log.Info("old root dropped: rotation complete", "sequence", m.authority.Status().Sequence)
	default:
		return
	}
	if err := m.caChanged(ctx); err != nil {
		m.log.Error("publish CA change", "err", err)
	}
}

func (m *Member) caChanged(ctx context.Context) error {
	if err := m.saveAuthority(ctx); err != nil {
		return err
	}
	if _, err := m.bundles.Update(m.authority.Bundle()); err != nil {
		return err
	}
	return m.republishInfo(ctx)
}

// allMembersHave asks every live member (the hub included) whether it holds
// our bundle at seq or newer.
func (m *Member) allMembersHave(ctx context.Context, seq uint64) bool {
	for _, ms := range m.gossip.Members() {
		if ms.API == "" || ms.Cluster == m.cfg.Cluster {
			continue
		}
		id := membership.HubID(m.td)
		if ms.Cluster != "" {
			id = membership.ClusterID(m.td, ms.Cluster)
		}
		conn, err := m.conn(ms.API, id)
		if err != nil {
			return false
		}
		cctx, cancel := context.WithTimeout(ctx, rotationProbe)
		st, err := hubpb.NewRegistryClient(conn).Status(cctx, &hubpb.StatusRequest{})
		cancel()
		if err != nil {
			m.log.Debug("rotation waits for a member", "member", ms.Name, "err", err)
			return false
		}
		has := false
		for _, c := range st.GetClusters() {
			if c.GetName() == m.cfg.Cluster && c.GetBundleSequence() >= seq {
				has = true
			}
		}
		if !has {
			m.log.Debug("rotation waits for a member", "member", ms.Name, "sequence", seq)
			return false
		}
	}
	return true
}
