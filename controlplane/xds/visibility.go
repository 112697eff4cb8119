package xds

import (
	"maps"
	"slices"
	"strings"
	"sync"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/federate/federate/locality"
	"github.com/federate/federate/registry"
)

// Exported is where an Istio object may be seen: its namespace and its
// exportTo list (see registry.ExportedTo).
type Exported struct {
	Namespace string
	ExportTo  []string
}

// VisibleIn reports whether clients in namespace may see the object.
func (e Exported) VisibleIn(namespace string) bool {
	return registry.ExportedTo(e.ExportTo, e.Namespace, namespace)
}

// ClientViews is the clients' configuration of a cluster as the clients of
// each namespace see it, after Istio's exportTo: a namespace sees the
// services (ServiceEntries) exported to it, and the DestinationRules
// exported to it; a host whose rule it may not see has no subsets there
// and the default policy, as if it had no rule. Namespaces that may see
// the same things share one snapshot, and when every namespace may see
// everything they all share the full one.
type ClientViews struct {
	in    ClientsInput
	rules map[string]Exported
	all   *Clients

	mu     sync.Mutex                   // guards byView
	byView map[string]*cachev3.Snapshot // by what a view hides
}

// BuildClientViews renders the full configuration of a cluster's clients
// (BuildClients); rules holds, by service hostname, where the
// DestinationRule that applies to the host may be seen. The views of
// namespaces that may not see everything are built on first use.
func BuildClientViews(in ClientsInput, rules map[string]Exported) (*ClientViews, error) {
	all, err := BuildClients(in)
	if err != nil {
		return nil, err
	}
	return &ClientViews{in: in, rules: rules, all: all, byView: make(map[string]*cachev3.Snapshot)}, nil
}

// All is the configuration with nothing hidden, as status reports it.
func (v *ClientViews) All() *Clients { return v.all }

// For returns the snapshot for the clients of namespace.
func (v *ClientViews) For(namespace string) (*cachev3.Snapshot, error) {
	in, hidden := v.visibleIn(namespace)
	if hidden == "" {
		return v.all.Snapshot, nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if snap, ok := v.byView[hidden]; ok {
		return snap, nil
	}
	// Each view reuses its own last build: a host looks different in a
	// view that hides some of its services.
	in.Reuse = v.in.Reuse.view(hidden)
	c, err := BuildClients(in)
	if err != nil {
		return nil, err
	}
	v.byView[hidden] = c.Snapshot
	return c.Snapshot, nil
}

// visibleIn returns the input as namespace sees it, and a key naming
// what it hides ("" for nothing).
func (v *ClientViews) visibleIn(namespace string) (ClientsInput, string) {
	in := v.in
	var hidden []string
	in.Views = make([]ClusterView, len(v.in.Views))
	for i, view := range v.in.Views {
		kept := make([]*registry.Service, 0, len(view.Services))
		for _, svc := range view.Services {
			if (Exported{svc.GetNamespace(), svc.GetExportTo()}).VisibleIn(namespace) {
				kept = append(kept, svc)
			} else {
				hidden = append(hidden, "service "+view.Name+"/"+svc.GetHostname())
			}
		}
		view.Services = kept
		in.Views[i] = view
	}
	hiddenRules := make(map[string]bool)
	for host, e := range v.rules {
		if !e.VisibleIn(namespace) {
			hiddenRules[host] = true
			hidden = append(hidden, "rule "+host)
		}
	}
	if len(hiddenRules) > 0 {
		in.Subsets = maps.Clone(in.Subsets)
		maps.DeleteFunc(in.Subsets, func(host string, _ []Subset) bool { return hiddenRules[host] })
		policy := in.Policy
		in.Policy = func(host, subset string, port uint32) locality.Policy {
			if hiddenRules[host] || policy == nil {
				return locality.DefaultPolicy()
			}
			return policy(host, subset, port)
		}
	}
	slices.Sort(hidden)
	return in, strings.Join(hidden, "\n")
}
