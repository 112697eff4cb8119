package eastwest

import "sync"

// liveConns is the set of connections a gateway serves, from accept to
// close: the drain closes them, the parker's sweeper looks for idle
// directions among them. One map entry per connection, where a
// context.AfterFunc per connection cost a registration in the parent
// context, two closures and a lock on every accept and close.
type liveConns struct {
	mu      sync.Mutex
	m       map[*relayed]struct{}
	closing bool // closeAll ran: no connection joins any more
}

// add registers r; false means the gateway is closing its connections
// and the caller closes r.
func (l *liveConns) add(r *relayed) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return false
	}
	if l.m == nil {
		l.m = map[*relayed]struct{}{}
	}
	l.m[r] = struct{}{}
	return true
}

func (l *liveConns) remove(r *relayed) {
	l.mu.Lock()
	delete(l.m, r)
	l.mu.Unlock()
}

// each calls f for every connection, holding the set's lock: f must not
// add or remove connections.
func (l *liveConns) each(f func(*relayed)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for r := range l.m {
		f(r)
	}
}

// closeAll closes every connection, and those that come later as they
// come.
func (l *liveConns) closeAll() {
	l.mu.Lock()
	l.closing = true
	rs := make([]*relayed, 0, len(l.m))
	for r := range l.m {
		rs = append(rs, r)
	}
	l.mu.Unlock()
	for _, r := range rs {
		r.close()
	}
}
