package registry

import (
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/federate/federate/registry/registrypb"
)

// Verified is a record whose signature has been checked, with its decoded form.
type Verified struct {
	Record *Record
	Signed *registrypb.SignedRecord
}

// Entry is the newest known record for one key of a slice.
type Entry struct {
	Version   *Version
	Signed    *registrypb.SignedRecord
	Deleted   bool
	Endpoints int
	// Service is the decoded body; nil in a Set that does not keep bodies
	// (the hub only relays).
	Service *Service
	Info    *ClusterInfo
}

// Slice is everything one cluster exports.
type Slice struct {
	Cluster     string
	Incarnation uint64
	Version     *Version
	Entries     map[string]*Entry
	// Applied is when the newest record was merged here, SignedAt when its
	// owner signed it; the difference is the propagation lag.
	Applied  time.Time
	SignedAt time.Time

	// Kept as entries change, so that reading them costs nothing per
	// service: the live services and their endpoints, and the live
	// services sorted by hostname (nil until asked for after a change).
	services, endpoints int
	sorted              []*Service
}

// Services counts the live services and their endpoints.
func (sl *Slice) Services() (services, endpoints int) {
	return sl.services, sl.endpoints
}

// count adds (sign 1) or takes away (sign -1) an entry's service.
func (sl *Slice) count(key string, e *Entry, sign int) {
	if e == nil || key == InfoKey || e.Deleted {
		return
	}
	sl.services += sign
	sl.endpoints += sign * e.Endpoints
}

// reset empties the slice for its owner's new incarnation inc.
func (sl *Slice) reset(inc uint64) {
	clear(sl.Entries)
	sl.Incarnation, sl.Version = inc, nil
	sl.services, sl.endpoints, sl.sorted = 0, 0, nil
}

// remove forgets the entry of key.
func (sl *Slice) remove(key string) {
	e := sl.Entries[key]
	delete(sl.Entries, key)
	sl.count(key, e, -1)
	sl.sorted = resorted(sl.sorted, liveService(key, e), nil)
}

// Set holds every known cluster's slice and merges records into it by owner
// and version. It is safe for concurrent use.
type Set struct {
	keepBodies bool
	now        func() time.Time

	mu     sync.RWMutex // guards slices
	slices map[string]*Slice
}

// NewSet returns an empty set. keepBodies keeps decoded services for views;
// a relay that only forwards records passes false to save memory.
func NewSet(keepBodies bool) *Set {
	return &Set{keepBodies: keepBodies, now: time.Now, slices: make(map[string]*Slice)}
}

// Apply merges records and returns the ones that changed the set. A record
// of a newer incarnation replaces everything its owner had published before.
func (s *Set) Apply(recs []Verified) []Verified {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var changed []Verified
	for _, v := range recs {
		if s.applyLocked(v, now) {
			changed = append(changed, v)
		}
	}
	return changed
}

func (s *Set) applyLocked(v Verified, now time.Time) bool {
	rec := v.Record
	sl := s.slices[rec.GetCluster()]
	if sl == nil {
		sl = &Slice{Cluster: rec.GetCluster(), Entries: make(map[string]*Entry)}
		s.slices[sl.Cluster] = sl
	}
	inc := rec.GetVersion().GetIncarnation()
	switch {
	case inc < sl.Incarnation:
		return false
	case inc > sl.Incarnation:
		sl.reset(inc)
	}
	old := sl.Entries[rec.GetKey()]
	if old != nil && Compare(old.Version, rec.GetVersion()) >= 0 {
		return false
	}
	sl.count(rec.GetKey(), old, -1)
	e := &Entry{Version: rec.GetVersion(), Signed: v.Signed, Deleted: rec.GetDeleted()}
	if svc := rec.GetService(); svc != nil {
		e.Endpoints = len(svc.GetEndpoints())
	}
	e.Info = rec.GetInfo() // small, and needed by every status view
	if s.keepBodies {
		e.Service = rec.GetService()
	}
	sl.Entries[rec.GetKey()] = e
	sl.count(rec.GetKey(), e, 1)
	sl.sorted = resorted(sl.sorted, liveService(rec.GetKey(), old), liveService(rec.GetKey(), e))
	if Compare(rec.GetVersion(), sl.Version) > 0 {
		sl.Version = rec.GetVersion()
		sl.SignedAt = time.Unix(0, rec.GetSignedAt())
	}
	sl.Applied = now
	return true
}

// Since returns the records newer than known, per cluster. A cluster whose
// incarnation differs from known gets its whole slice.
func (s *Set) Since(known map[string]*Version) []*registrypb.SignedRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*registrypb.SignedRecord
	for name, sl := range s.slices {
		out = sl.appendSince(out, known[name])
	}
	return out
}

// SliceSince is Since for one cluster: its records newer than have.
func (s *Set) SliceSince(cluster string, have *Version) []*registrypb.SignedRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if sl := s.slices[cluster]; sl != nil {
		return sl.appendSince(nil, have)
	}
	return nil
}

func (sl *Slice) appendSince(out []*registrypb.SignedRecord, have *Version) []*registrypb.SignedRecord {
	full := have == nil || have.GetIncarnation() != sl.Incarnation
	for _, e := range sl.Entries {
		if full && e.Deleted {
			continue
		}
		if full || Compare(e.Version, have) > 0 {
			out = append(out, e.Signed)
		}
	}
	return out
}

// Versions returns the newest version held per cluster.
func (s *Set) Versions() map[string]*Version {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]*Version, len(s.slices))
	for name, sl := range s.slices {
		if sl.Version != nil {
			out[name] = sl.Version
		}
	}
	return out
}

// Version returns the newest version held for one cluster, or nil.
func (s *Set) Version(cluster string) *Version {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if sl := s.slices[cluster]; sl != nil {
		return sl.Version
	}
	return nil
}

// Remove drops a cluster's slice and reports whether it was there.
func (s *Set) Remove(cluster string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.slices[cluster]
	delete(s.slices, cluster)
	return ok
}

// Clusters returns the names of all clusters with a slice, sorted.
func (s *Set) Clusters() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.slices))
	for name := range s.slices {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// Summary describes one slice without its records.
type Summary struct {
	Cluster   string
	Version   *Version
	Services  int
	Endpoints int
	Info      *ClusterInfo
	Applied   time.Time
	SignedAt  time.Time
}

// Summaries describes every slice, sorted by cluster.
func (s *Set) Summaries() []Summary {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Summary, 0, len(s.slices))
	for _, sl := range s.slices {
		sum := Summary{Cluster: sl.Cluster, Version: sl.Version, Applied: sl.Applied, SignedAt: sl.SignedAt}
		sum.Services, sum.Endpoints = sl.Services()
		if e := sl.Entries[InfoKey]; e != nil && !e.Deleted {
			sum.Info = e.Info
		}
		out = append(out, sum)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out
}

// Services returns a cluster's live services sorted by hostname. The
// returned slice and messages are shared: callers must not modify them.
// The list is sorted once per change of the slice, not once per call:
// every build of a control plane reads every cluster's.
func (s *Set) Services(cluster string) []*Service {
	s.mu.RLock()
	sl := s.slices[cluster]
	if sl == nil || sl.sorted != nil {
		defer s.mu.RUnlock()
		if sl == nil {
			return nil
		}
		return sl.sorted
	}
	s.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl = s.slices[cluster]; sl == nil {
		return nil
	}
	if sl.sorted == nil {
		out := make([]*Service, 0, len(sl.Entries))
		for k, e := range sl.Entries {
			if k != InfoKey && !e.Deleted && e.Service != nil {
				out = append(out, e.Service)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].GetHostname() < out[j].GetHostname() })
		sl.sorted = out
	}
	return sl.sorted
}

// Newer returns the records that Apply would accept, without applying them.
// Of several records for one key, only the newest is kept.
func (s *Set) Newer(recs []Verified) []Verified {
	s.mu.RLock()
	defer s.mu.RUnlock()
	type ck struct{ cluster, key string }
	best := make(map[ck]int)
	var out []Verified
	for _, v := range recs {
		rec := v.Record
		if sl := s.slices[rec.GetCluster()]; sl != nil {
			inc := rec.GetVersion().GetIncarnation()
			if inc < sl.Incarnation {
				continue
			}
			if old := sl.Entries[rec.GetKey()]; inc == sl.Incarnation && old != nil && Compare(old.Version, rec.GetVersion()) >= 0 {
				continue
			}
		}
		k := ck{rec.GetCluster(), rec.GetKey()}
		if i, ok := best[k]; ok {
			if Compare(rec.GetVersion(), out[i].Record.GetVersion()) > 0 {
				out[i] = v
			}
			continue
		}
		best[k] = len(out)
		out = append(out, v)
	}
	return out
}

// Entries returns a copy of one cluster's entries by key (tombstones
// included); the entries themselves are shared and must not be modified.
func (s *Set) Entries(cluster string) map[string]*Entry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sl := s.slices[cluster]
	if sl == nil {
		return nil
	}
	out := make(map[string]*Entry, len(sl.Entries))
	for k, e := range sl.Entries {
		out[k] = e
	}
	return out
}

// Info returns the ClusterInfo a cluster publishes, or nil, without
// describing every slice as Summaries does.
func (s *Set) Info(cluster string) *ClusterInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if sl := s.slices[cluster]; sl != nil {
		if e := sl.Entries[InfoKey]; e != nil && !e.Deleted {
			return e.Info
		}
	}
	return nil
}

// liveService is the service an entry holds, or nil.
func liveService(key string, e *Entry) *Service {
	if e == nil || e.Deleted || key == InfoKey {
		return nil
	}
	return e.Service
}

// resorted returns the sorted list with old replaced by svc (either may
// be nil), as a new slice: readers may hold the previous one. A list not
// made yet (nil) stays so, for Services to sort when asked.
func resorted(sorted []*Service, old, svc *Service) []*Service {
	if sorted == nil || old == nil && svc == nil {
		return sorted
	}
	byHost := func(h string) int {
		return sort.Search(len(sorted), func(i int) bool { return sorted[i].GetHostname() >= h })
	}
	switch {
	case old != nil && svc != nil:
		i := byHost(old.GetHostname())
		if old.GetHostname() != svc.GetHostname() || i == len(sorted) || sorted[i] != old {
			return nil // not as expected: sort again when asked
		}
		out := slices.Clone(sorted)
		out[i] = svc
		return out
	case old != nil:
		i := byHost(old.GetHostname())
		if i == len(sorted) || sorted[i] != old {
			return nil
		}
		return slices.Concat(sorted[:i], sorted[i+1:])
	default:
		i := byHost(svc.GetHostname())
		return slices.Concat(sorted[:i], []*Service{svc}, sorted[i:])
	}
}
