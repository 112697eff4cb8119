package member

import (
	"errors"
	"slices"
	"strings"

	"github.com/federate/federate/membership"
)

// hubAddr is the hub as the member dials it now: one address, or every
// replica's, the one to try first first.
func (m *Member) hubAddr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hubOrder == "" {
		m.hubOrder = m.cfg.Hub
	}
	return m.hubOrder
}

// leaveReplica moves the replica at addr, whose stream just broke, to the
// end of the list and drops the connection: the next call goes to another
// replica at once, not to one that is stopping while it still accepts
// calls.
func (m *Member) leaveReplica(addr string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.hubOrder == "" {
		m.hubOrder = m.cfg.Hub
	}
	addrs := membership.HubAddrs(m.hubOrder)
	i := slices.Index(addrs, addr)
	if len(addrs) < 2 || i < 0 {
		return false
	}
	old := m.hubOrder
	addrs = append(slices.Delete(slices.Clone(addrs), i, i+1), addr)
	m.hubOrder = strings.Join(addrs, ",")
	key := old + "|" + membership.HubID(m.td).String()
	if c, ok := m.conns[key]; ok {
		delete(m.conns, key)
		go c.Close() // its calls end; the callers retry on the new list
	}
	m.log.Info("hub replica left; moving to the next", "left", addr, "hubs", m.hubOrder)
	return true
}

// errReplicaLeft is a stream that broke with its replica, which the
// member then moved to the end of its list.
var errReplicaLeft = errors.New("member: the hub replica left")
