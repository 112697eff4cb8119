package xdsclient

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/federate/federate/eastwest"
)

// Routes is a gateway's live routing table, fed by the ADS client; it is
// the gateway's eastwest.Router. Each connection goes first to an endpoint
// picked by locality.Picker (priority load, locality and endpoint
// weights, health), then to the others, best priority first, for the
// gateway's connect retry.
type Routes struct {
	table atomic.Pointer[Table]

	init   sync.Once
	loaded chan struct{} // closed by the first Set
	first  sync.Once
}

// Set installs a new table; connections in flight keep their upstream.
func (r *Routes) Set(t *Table) {
	r.table.Store(t)
	r.first.Do(func() { close(r.loadedCh()) })
}

// Ready reports whether a table has arrived.
func (r *Routes) Ready() bool { return r.table.Load() != nil }

// Loaded is closed when the first table arrives; the gateway accepts no
// connection before.
func (r *Routes) Loaded() <-chan struct{} { return r.loadedCh() }

func (r *Routes) loadedCh() chan struct{} {
	r.init.Do(func() { r.loaded = make(chan struct{}) })
	return r.loaded
}

// Route implements eastwest.Router.
func (r *Routes) Route(name string) (eastwest.Route, error) {
	table := r.table.Load() // one table per lookup, though Set may run meanwhile
	addrs, ok := table.Lookup(name)
	if !ok {
		return eastwest.Route{}, fmt.Errorf("%w: %q is not exported by this cluster", eastwest.ErrNoRoute, name)
	}
	var first string
	if pk := table.Pickers[name]; pk != nil {
		first, ok = pk.PickAddr()
	}
	if !ok || len(addrs) == 0 || addrs[0] == first && len(addrs) == 1 {
		return eastwest.Route{Endpoints: addrs}, nil
	}
	out := make([]string, 0, len(addrs)+1)
	out = append(out, first)
	for _, a := range addrs {
		if a != first {
			out = append(out, a)
		}
	}
	return eastwest.Route{Endpoints: out}, nil
}
