package member

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry/store"
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

// metaHubs keys, in BucketMeta, the hub's replicas as the hub named them
// last, one address a line.
const metaHubs = "hubs"

// maxLearnedHubs bounds the replicas a hub may have the member keep.
const maxLearnedHubs = 64

// Hubs is the hub's addresses as the member dials them now, the one to try
// first first: those it joined with, then the replicas it learned from the
// hub.
func (m *Member) Hubs() []string { return membership.HubAddrs(m.hubAddr()) }

// loadHubs restores the hub's replicas the member learned before it
// stopped: a member whose join addresses are all gone still finds the hub.
func (m *Member) loadHubs() error {
	data, err := m.cfg.Store.Get(store.BucketMeta, metaHubs)
	if err != nil {
		return fmt.Errorf("member: %w", err)
	}
	learned := validHubs(strings.Split(string(data), "\n"))
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hubsLearned = learned
	m.hubOrder = mergeHubs(m.cfg.Hub, m.cfg.Hub, learned)
	return nil
}

// learnHubs keeps the hub's replicas as it names them: the member dials
// them after the addresses it joined with, so that it follows a hub whose
// replicas are replaced, and keeps them in its store for its next start.
func (m *Member) learnHubs(ctx context.Context, hubs []string) {
	learned := validHubs(hubs)
	if len(learned) == 0 {
		return
	}
	m.mu.Lock()
	if slices.Equal(m.hubsLearned, learned) {
		m.mu.Unlock()
		return
	}
	m.hubsLearned = learned
	m.hubOrder = mergeHubs(cmp.Or(m.hubOrder, m.cfg.Hub), m.cfg.Hub, learned)
	order := m.hubOrder
	m.mu.Unlock()
	if err := m.cfg.Store.Write(ctx, store.Op{Bucket: store.BucketMeta, Key: metaHubs, Value: []byte(strings.Join(learned, "\n"))}); err != nil {
		m.log.Warn("keep the hub's replicas in the store; they are learned again from the next stream", "err", err)
	}
	m.log.Info("the hub named its replicas", "replicas", learned, "hubs", order)
}

// mergeHubs is the list to dial: the addresses of current that the member
// still knows, in current's order (a replica that left is at the end),
// then the other joined addresses, then the other learned ones.
func mergeHubs(current, joined string, learned []string) string {
	known := membership.HubAddrs(joined)
	known = append(known, learned...)
	var out []string
	for _, a := range slices.Concat(membership.HubAddrs(current), known) {
		if slices.Contains(known, a) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return strings.Join(out, ",")
}

// validHubs keeps the addresses that are host:port, each once, at most
// maxLearnedHubs of them. A replica listening on every interface without
// --advertise names an unspecified address (0.0.0.0, ::), which is no
// address of it to dial from elsewhere.
func validHubs(hubs []string) []string {
	var out []string
	for _, a := range hubs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || port == "" || len(a) > 255 || strings.ContainsAny(a, ", \t\n") || slices.Contains(out, a) {
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
			continue
		}
		if out = append(out, a); len(out) == maxLearnedHubs {
			break
		}
	}
	return out
}

// dropStaleHubConns closes the connections to hub lists the member no
// longer dials, once the stream that used one has ended.
func (m *Member) dropStaleHubConns() {
	m.mu.Lock()
	defer m.mu.Unlock()
	suffix := "|" + membership.HubID(m.td).String()
	for key, c := range m.conns {
		if addr, ok := strings.CutSuffix(key, suffix); ok && addr != cmp.Or(m.hubOrder, m.cfg.Hub) {
			delete(m.conns, key)
			go c.Close()
		}
	}
}
