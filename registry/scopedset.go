package registry

import (
	"slices"

	"github.com/federate/federate/registry/registrypb"
)

// SinceIn is Since for a holder that imports scope only: the records in
// scope newer than known, and every live record of the hosts in whole
// whatever its version (imports the holder added since it took known).
func (s *Set) SinceIn(known map[string]*Version, scope *Scope, whole []string) []*registrypb.SignedRecord {
	if scope.All() && len(whole) == 0 {
		return s.Since(known)
	}
	added := make(map[string]bool, len(whole))
	for _, h := range whole {
		added[h] = true
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*registrypb.SignedRecord
	for name, sl := range s.slices {
		have := known[name]
		full := have == nil || have.GetIncarnation() != sl.Incarnation
		for key, e := range sl.Entries {
			if !scope.Includes(key) {
				continue
			}
			if (full || added[key]) && e.Deleted {
				continue
			}
			if full || added[key] || Compare(e.Version, have) > 0 {
				out = append(out, e.Signed)
			}
		}
	}
	return out
}

// Advance records that the holder has every record it imports of a
// cluster's slice up to v, though it holds none that new: the records it
// left out do not make the slice look behind. A newer incarnation drops
// the older one's records, as its first record would; reset says so, for
// the holder to drop them from its store too.
func (s *Set) Advance(cluster string, v *Version) (reset bool) {
	if v == nil || v.GetIncarnation() == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.slices[cluster]
	if sl == nil {
		sl = &Slice{Cluster: cluster, Entries: make(map[string]*Entry)}
		s.slices[cluster] = sl
	}
	switch inc := v.GetIncarnation(); {
	case inc < sl.Incarnation:
		return false
	case inc > sl.Incarnation:
		reset = len(sl.Entries) > 0
		sl.reset(inc)
	}
	if Compare(v, sl.Version) > 0 {
		sl.Version = v
	}
	return reset
}

// RecordRef names one record of a slice.
type RecordRef struct{ Cluster, Key string }

// Withdrawable returns the records Withdraw would forget.
func (s *Set) Withdrawable(scope *Scope, own string) []RecordRef {
	if scope.All() {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.outOfScopeLocked(scope, own)
}

// Withdraw forgets the records out of scope of every cluster but own,
// tombstones included, and returns them. The slices keep their versions:
// what was left out is not missing.
func (s *Set) Withdraw(scope *Scope, own string) []RecordRef {
	if scope.All() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.outOfScopeLocked(scope, own)
	for _, r := range out {
		s.slices[r.Cluster].remove(r.Key)
	}
	return out
}

// outOfScopeLocked returns the records out of scope of every cluster but
// own; the caller holds s.mu.
func (s *Set) outOfScopeLocked(scope *Scope, own string) []RecordRef {
	var out []RecordRef
	for name, sl := range s.slices {
		if name == own {
			continue
		}
		for key := range sl.Entries {
			if !scope.Includes(key) {
				out = append(out, RecordRef{Cluster: name, Key: key})
			}
		}
	}
	return out
}

// Exporters returns the clusters, sorted, whose slice holds a live service
// of host.
func (s *Set) Exporters(host string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for name, sl := range s.slices {
		if e := sl.Entries[host]; e != nil && !e.Deleted && host != InfoKey {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
