package member

import (
	"context"
	"fmt"
	"sort"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/registry/store"
	"google.golang.org/protobuf/proto"
)

// A control plane calls Update with its whole list of services whenever
// anything in it changed, so most of the list is what we already
// published. Telling those services apart costs a comparison per service;
// it is done without writeMu, which the records of other clusters wait
// for, and only the records that differ are signed and written under it.

// slicePlan is what it takes to bring our slice to the desired state, as
// found against the slice at version held.
type slicePlan struct {
	incarnation uint64
	held        *registry.Version
	// records are the changed and withdrawn records, sorted by key, not
	// yet versioned or signed.
	records []*registry.Record
}

// planSlice compares desired with our slice. Unless partial, keys missing
// from desired are withdrawn.
func (m *Member) planSlice(desired map[string]proto.Message, partial bool) slicePlan {
	m.mu.Lock()
	p := slicePlan{incarnation: m.incarnation}
	m.mu.Unlock()
	// Only updateLocal changes our slice, so a plan made against version
	// held is right for as long as the slice stays at it. The version is
	// read first: a change between the two reads makes the plan stale.
	p.held = m.set.Version(m.cfg.Cluster)
	current := m.set.Entries(m.cfg.Cluster)
	for k, want := range desired {
		if alreadyPublished(current[k], p.incarnation, k, want) {
			continue
		}
		rec := &registry.Record{Key: k}
		if k == registry.InfoKey {
			rec.Body = &registrypb.Record_Info{Info: want.(*registry.ClusterInfo)}
		} else {
			// A copy: the caller may change its services in place later.
			rec.Body = &registrypb.Record_Service{Service: proto.Clone(want).(*registry.Service)}
		}
		p.records = append(p.records, rec)
	}
	for k, cur := range current {
		if _, ok := desired[k]; !ok && !cur.Deleted && !partial {
			p.records = append(p.records, &registry.Record{Key: k, Deleted: true})
		}
	}
	sort.Slice(p.records, func(i, j int) bool { return p.records[i].GetKey() < p.records[j].GetKey() })
	return p
}

// stale reports whether our slice or incarnation moved since p was made.
func (m *Member) stale(p slicePlan) bool {
	m.mu.Lock()
	incarnation := m.incarnation
	m.mu.Unlock()
	return incarnation != p.incarnation || registry.Compare(m.set.Version(m.cfg.Cluster), p.held) != 0
}

// updateLocal signs, stores and applies the records that differ from
// desired, and returns how many there were. Unless partial, keys missing
// from desired are withdrawn.
func (m *Member) updateLocal(ctx context.Context, desired map[string]proto.Message, partial bool) (int, error) {
	return m.commitSlice(ctx, m.planSlice(desired, partial), desired, partial)
}

// commitSlice carries out p, or a new plan if another update changed our
// slice since p was made: then p may keep what that update replaced.
func (m *Member) commitSlice(ctx context.Context, p slicePlan, desired map[string]proto.Message, partial bool) (int, error) {
	if len(p.records) == 0 {
		// Nothing differed when p was made. An update that changed the
		// slice since overlapped with this one and counts as the later.
		return 0, nil
	}
	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	if m.stale(p) {
		p = m.planSlice(desired, partial)
	}
	if len(p.records) == 0 {
		return 0, nil
	}
	m.mu.Lock()
	counter := m.counter
	m.mu.Unlock()
	signer := registry.Signer{Cluster: m.cfg.Cluster, Key: m.cfg.Credential.Key(), Cert: m.cfg.Credential.Leaf().Raw}
	now := m.cfg.Now().UnixNano()
	out := make([]registry.Verified, 0, len(p.records))
	for _, rec := range p.records {
		counter++
		rec.Cluster = m.cfg.Cluster
		rec.Version = &registry.Version{Incarnation: p.incarnation, Counter: counter}
		rec.SignedAt = now
		sr, err := signer.Sign(rec)
		if err != nil {
			return 0, err
		}
		out = append(out, registry.Verified{Record: rec, Signed: sr})
	}
	if err := m.cfg.Store.Write(ctx, store.RecordOps(m.set, out)...); err != nil {
		return 0, err
	}
	m.set.Apply(out)
	m.mu.Lock()
	m.counter = counter
	m.notifyLocked()
	m.mu.Unlock()
	m.log.Debug("slice updated", "records", len(out), "version", fmt.Sprintf("%d.%d", p.incarnation, counter))
	return len(out), nil
}

// alreadyPublished reports whether cur is a live record of this
// incarnation that holds want.
func alreadyPublished(cur *registry.Entry, incarnation uint64, key string, want proto.Message) bool {
	if cur == nil || cur.Deleted || cur.Version.GetIncarnation() != incarnation {
		return false
	}
	if key == registry.InfoKey {
		return proto.Equal(cur.Info, want)
	}
	return cur.Service != nil && sameService(cur.Service, want.(*registry.Service))
}
