package workloads

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
)

// The control plane's store keeps every entry, so that a restart does not
// withdraw its VMs from the federation until their agents reconnect: the
// entries of the agents connected when it stopped come back as they were,
// healthy or not, for the grace period, as Istio keeps an auto-registered
// WorkloadEntry in the API server across an istiod restart. Their agents'
// imports come back with them, so the restarted cluster imports what its
// VMs call from its first fetch.

// savedEntry is an entry as the store keeps it (JSON).
type savedEntry struct {
	Namespace      string            `json:"namespace"`
	Name           string            `json:"name"`
	Group          string            `json:"group"`
	Address        string            `json:"address"`
	Network        string            `json:"network,omitempty"`
	Locality       string            `json:"locality,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	Annotations    map[string]string `json:"annotations,omitempty"`
	AppPorts       map[string]uint32 `json:"appPorts,omitempty"`
	ID             string            `json:"id"`
	Weight         uint32            `json:"weight,omitempty"`
	InboundPort    uint32            `json:"inboundPort"`
	Imports        []string          `json:"imports,omitempty"`
	Probed         bool              `json:"probed,omitempty"`
	Healthy        bool              `json:"healthy,omitempty"`
	HealthMessage  string            `json:"healthMessage,omitempty"`
	Connected      bool              `json:"connected,omitempty"`
	DisconnectedAt time.Time         `json:"disconnectedAt,omitzero"`
}

func (e *workloadEntry) saved() savedEntry {
	s := savedEntry{
		Namespace: e.namespace, Name: e.name, Group: e.group, Address: e.address, Network: e.network,
		Labels: maps.Clone(e.labels), Annotations: maps.Clone(e.annotations), AppPorts: maps.Clone(e.appPorts),
		ID: e.id.String(), Weight: e.weight, InboundPort: e.inboundPort, Imports: slices.Clone(e.imports),
		Probed: e.probed, Healthy: e.healthy, HealthMessage: e.healthMessage,
		Connected: e.streams > 0 || e.restored, DisconnectedAt: e.disconnectedAt,
	}
	if e.locality != nil {
		s.Locality = registry.FormatLocality(e.locality)
	}
	return s
}

// Saved is what a control plane's store holds of its entries: LoadSaved
// reads it before the control plane starts, Config.Saved restores it.
type Saved struct {
	at      time.Time             // when they were read
	entries map[string]savedEntry // those that come back
	// dropped are the keys of the entries that do not: their grace period
	// ended while the control plane was down, or they do not decode.
	dropped map[string]string // key -> why
}

// aliveKey, in store.BucketMeta, is when the workload server last wrote
// to the store: every save writes it, and it is written every quarter
// grace period while there are entries. A store not written within a
// grace period (a control plane down for longer, or a standby replica's
// store from when it last led) holds entries that may be long gone: each
// is then counted as disconnected since that time.
const aliveKey = "workloads-alive"

// LoadSaved reads the entries st keeps, as of now, for a grace period of
// grace (0: DefaultGrace). An entry whose grace period ended while the
// control plane was down does not come back, nor does one that does not
// decode: its agent registers it again when it reconnects.
func LoadSaved(st *store.Store, grace time.Duration, now time.Time) (*Saved, error) {
	if grace <= 0 {
		grace = DefaultGrace
	}
	s := &Saved{at: now, entries: map[string]savedEntry{}, dropped: map[string]string{}}
	var alive time.Time
	if raw, err := st.Get(store.BucketMeta, aliveKey); err != nil {
		return nil, fmt.Errorf("workloads: read %s: %w", st.Path(), err)
	} else if raw != nil {
		_ = alive.UnmarshalText(raw) // unreadable: the zero time, long ago
	}
	err := st.ForEach(store.BucketWorkloads, func(key string, value []byte) error {
		var e savedEntry
		err := json.Unmarshal(value, &e)
		if err == nil {
			_, err = spiffeid.FromString(e.ID)
		}
		switch {
		case err != nil:
			s.dropped[key] = "does not decode: " + err.Error()
		case e.Connected && now.Sub(alive) > grace:
			s.dropped[key] = fmt.Sprintf("connected when the store was last written, %s ago, longer than the grace period", now.Sub(alive).Round(time.Second))
		case !e.Connected && now.Sub(e.DisconnectedAt) >= grace:
			s.dropped[key] = "its grace period ended while the control plane was down"
		default:
			s.entries[key] = e
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("workloads: read the saved entries of %s: %w", st.Path(), err)
	}
	return s, nil
}

// Imports are the services the agents of the entries that come back import.
func (s *Saved) Imports() []string {
	if s == nil {
		return nil
	}
	var lists [][]string
	for _, e := range s.entries {
		lists = append(lists, e.Imports)
	}
	return agentImports(lists...)
}

// restore makes the saved entries the server's: one whose agent was
// connected is ready as it was, until its agent reconnects or the grace
// period, counted from the restart, ends.
func (w *Server) restore(s *Saved) {
	if s == nil {
		return
	}
	for key, why := range s.dropped {
		w.log.Info("a saved workload entry does not come back; its agent registers it again when it connects", "entry", key, "reason", why)
		w.dirty[key] = true // deleted at the first save
	}
	for key, se := range s.entries {
		e := &workloadEntry{
			namespace: se.Namespace, name: se.Name, group: se.Group, address: se.Address, network: se.Network,
			labels: se.Labels, annotations: se.Annotations, appPorts: se.AppPorts, id: spiffeid.RequireFromString(se.ID),
			weight: se.Weight, inboundPort: se.InboundPort, imports: se.Imports,
			probed: se.Probed, healthy: se.Healthy, healthMessage: se.HealthMessage,
			restored: se.Connected, disconnectedAt: se.DisconnectedAt,
		}
		if se.Locality != "" {
			e.locality, _ = registry.ParseLocality(se.Locality)
		}
		if e.restored {
			e.disconnectedAt = s.at
		}
		w.entries[key] = e
	}
	if len(s.entries) > 0 {
		w.log.Info("workload entries restored; each waits for its agent for the grace period", "entries", len(s.entries), "grace", w.cfg.Grace)
	}
}

// markLocked has the entry of key saved (or deleted, once gone) at the
// next save; w.mu is held.
func (w *Server) markLocked(key string) {
	w.dirty[key] = true
	signal(w.saveSignal)
}

// save writes the entries marked since the last save, in one
// transaction, with the time (aliveKey); with beat it writes the time even
// if no entry changed, at most every quarter grace period and only while
// there are entries. A failed write is logged and tried again at the next
// save: the entries in memory are unaffected.
func (w *Server) save(ctx context.Context, beat bool) {
	now := w.cfg.Now()
	w.mu.Lock()
	var ops []store.Op
	for key := range w.dirty {
		op := store.Op{Bucket: store.BucketWorkloads, Key: key}
		if e := w.entries[key]; e != nil {
			op.Value, _ = json.Marshal(e.saved())
		}
		ops = append(ops, op)
	}
	beat = beat && len(w.entries) > 0 && now.Sub(w.beaten) >= w.cfg.Grace/4
	dirty := w.dirty
	w.dirty = map[string]bool{}
	w.mu.Unlock()
	if len(ops) == 0 && !beat {
		return
	}
	alive, _ := now.MarshalText()
	ops = append(ops, store.Op{Bucket: store.BucketMeta, Key: aliveKey, Value: alive})
	err := w.cfg.Store.Write(ctx, ops...)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.log.Warn("save the workload entries: a restart before the next save forgets their last changes", "entries", len(dirty), "err", err)
		for key := range dirty {
			w.dirty[key] = true // saved at the next tick
		}
		return
	}
	w.beaten = now
}
