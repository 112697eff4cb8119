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
	entries map[string]savedEntry
	bad     map[string]error // entries that do not decode
}

// LoadSaved reads the entries st keeps. One that does not decode is
// dropped when they are restored, with a warning: its agent registers it
// again when it reconnects.
func LoadSaved(st *store.Store) (*Saved, error) {
	s := &Saved{entries: map[string]savedEntry{}, bad: map[string]error{}}
	err := st.ForEach(store.BucketWorkloads, func(key string, value []byte) error {
		var e savedEntry
		err := json.Unmarshal(value, &e)
		if err == nil {
			_, err = spiffeid.FromString(e.ID)
		}
		if err != nil {
			s.bad[key] = err
			return nil
		}
		s.entries[key] = e
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("workloads: read the saved entries of %s: %w", st.Path(), err)
	}
	return s, nil
}

// Imports are the services the saved entries' agents import.
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

// restore makes the saved entries the server's, as of now: one whose agent
// was connected is ready as it was, until its agent reconnects or the
// grace period ends.
func (w *Server) restore(s *Saved, now time.Time) {
	if s == nil {
		return
	}
	for key, err := range s.bad {
		w.log.Warn("a saved workload entry does not decode; dropped until its agent registers again", "entry", key, "err", err)
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
			e.disconnectedAt = now
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
// transaction. A failed write is logged and tried again at the next save:
// the entries in memory are unaffected.
func (w *Server) save(ctx context.Context) {
	w.mu.Lock()
	var ops []store.Op
	for key := range w.dirty {
		op := store.Op{Bucket: store.BucketWorkloads, Key: key}
		if e := w.entries[key]; e != nil {
			op.Value, _ = json.Marshal(e.saved())
		}
		ops = append(ops, op)
	}
	dirty := w.dirty
	w.dirty = map[string]bool{}
	w.mu.Unlock()
	if len(ops) == 0 {
		return
	}
	if err := w.cfg.Store.Write(ctx, ops...); err != nil {
		w.log.Warn("save the workload entries: a restart before the next save forgets their last changes", "entries", len(ops), "err", err)
		w.mu.Lock()
		for key := range dirty {
			w.dirty[key] = true // saved at the next tick
		}
		w.mu.Unlock()
	}
}
