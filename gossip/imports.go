package gossip

import (
	"slices"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/registry"
)

// Import states in status: a service some cluster exports, and one that
// none does yet (not an error: it is imported as soon as one does).
const (
	ImportImported = "imported"
	ImportPending  = "pending"
)

// SetImports fills cs with what its cluster imports, as set shows who
// exports each service.
func SetImports(cs *hubpb.ClusterStatus, scope *registry.Scope, set *registry.Set) {
	if scope.All() {
		cs.ImportsAll = true
		return
	}
	for _, host := range scope.Hosts() {
		from := slices.DeleteFunc(set.Exporters(host), func(c string) bool { return c == cs.GetName() })
		imp := &hubpb.Import{Host: host, State: ImportImported, From: from}
		if len(from) == 0 {
			imp.State = ImportPending
		}
		cs.Imports = append(cs.Imports, imp)
	}
}
