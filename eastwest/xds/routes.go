package xds

import (
	"fmt"
	"sync/atomic"

	"github.com/federate/federate/eastwest"
)

// Routes is a gateway's live routing table, fed by the ADS client; it is
// the gateway's eastwest.Router. Connections spread over a route's
// endpoints round robin.
type Routes struct {
	table atomic.Pointer[Table]
	next  atomic.Uint64
}

// Set installs a new table; connections in flight keep their upstream.
func (r *Routes) Set(t *Table) { r.table.Store(t) }

// Ready reports whether a table has arrived.
func (r *Routes) Ready() bool { return r.table.Load() != nil }

// Route implements eastwest.Router.
func (r *Routes) Route(name string) (eastwest.Route, error) {
	addrs, ok := r.table.Load().Lookup(name)
	if !ok {
		return eastwest.Route{}, fmt.Errorf("%w: %q is not exported by this cluster", eastwest.ErrNoRoute, name)
	}
	if len(addrs) < 2 {
		return eastwest.Route{Endpoints: addrs}, nil
	}
	start := int(r.next.Add(1) % uint64(len(addrs)))
	out := make([]string, 0, len(addrs))
	out = append(out, addrs[start:]...)
	out = append(out, addrs[:start]...)
	return eastwest.Route{Endpoints: out}, nil
}
