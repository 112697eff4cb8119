package gossip

import (
	"net"
	"time"
)

// sweep closes, every sweepInterval, the open connections of peers whose
// credential is no longer good: a cluster removed from the federation
// (learned from the hub after the connection opened) or an expired
// certificate. New connections of such peers are refused at the preamble.
func (t *tlsTransport) sweep() {
	defer t.wg.Done()
	tick := time.NewTicker(sweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
			t.closeInvalid(time.Now())
		}
	}
}

// closeInvalid closes the connections whose peer may no longer gossip.
func (t *tlsTransport) closeInvalid(now time.Time) {
	var conns []net.Conn
	var senders []*packetSender
	closed := make(map[string]bool)
	t.mu.Lock()
	for c, p := range t.conns {
		if p.leaf != nil && !t.guard.valid(p, now) {
			conns = append(conns, c)
			closed[p.id.String()] = true
		}
	}
	for _, s := range t.senders {
		if p := s.peer; p.leaf != nil && !t.guard.valid(p, now) {
			senders = append(senders, s)
			closed[p.id.String()] = true
		}
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.Close() // serve or memberlist untracks it
		t.guard.count(ClosedRevoked)
	}
	for _, s := range senders {
		// What still waits for the peer is dropped with its connection.
		t.dropSender(s, DroppedRevoked)
		t.guard.count(ClosedRevoked)
	}
	for id := range closed {
		t.log.Warn("closed the gossip connections of a removed cluster or an expired credential", "peer_id", id)
	}
}

// openByPeer counts the open connections, both ways, by peer name.
func (t *tlsTransport) openByPeer() map[string]int {
	out := make(map[string]int)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.conns {
		if p.leaf != nil {
			out[p.name()]++
		}
	}
	for _, s := range t.senders {
		// A connection the peer dialed is counted among t.conns.
		if s.peer.leaf != nil && s.dialedConnection() != nil {
			out[s.peer.name()]++
		}
	}
	return out
}
