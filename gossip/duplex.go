package gossip

import (
	"crypto/tls"
	"net"
	"slices"
)

// A packet connection carries packets both ways when both ends agree, in
// TLS's ALPN, to the protocol duplexPackets: the dialing member then reads
// what comes back on it, and the accepting member sends its own packets to
// the dialer on it instead of dialing a second connection. Every member
// heartbeats every other, so each pair of members held two connections,
// one each way: for 100 members, 19,800 TLS handshakes and, in one
// process, as many file descriptors on each end. A member of an earlier
// version offers no ALPN and never reads back, and is sent to on its own
// connection, as before.
const duplexPackets = "federate-gossip-duplex"

// withDuplex returns a copy of a server's TLS config that agrees to
// duplexPackets; connections without ALPN still work as before.
func withDuplex(conf *tls.Config) *tls.Config {
	c := conf.Clone()
	if !slices.Contains(c.NextProtos, duplexPackets) {
		c.NextProtos = append(c.NextProtos, duplexPackets)
	}
	return c
}

// inboundPackets is a duplex packet connection a peer dialed: packets to
// that peer may travel back on it.
type inboundPackets struct {
	conn net.Conn
	peer peer
}

// isDuplex reports whether both ends of c agreed to carry packets both ways.
func isDuplex(c *tls.Conn) bool {
	return c.ConnectionState().NegotiatedProtocol == duplexPackets
}

// addInbound offers c, a duplex connection that node dialed, for our
// packets to node, and lets a sender to node move onto it.
func (t *tlsTransport) addInbound(node string, c net.Conn, p peer) {
	if node == "" {
		return
	}
	t.mu.Lock()
	t.inbound[node] = inboundPackets{conn: c, peer: p}
	var senders []*packetSender
	for addr, s := range t.senders {
		if addr.Name == node {
			senders = append(senders, s)
		}
	}
	t.mu.Unlock()
	for _, s := range senders {
		t.preferInbound(s)
	}
}

// removeInbound withdraws c once its reader stopped.
func (t *tlsTransport) removeInbound(node string, c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if in, ok := t.inbound[node]; ok && in.conn == c {
		delete(t.inbound, node)
	}
}

func (t *tlsTransport) inboundFrom(node string) (inboundPackets, bool) {
	if node == "" {
		return inboundPackets{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	in, ok := t.inbound[node]
	return in, ok
}

// connect gives s a connection: the one its peer dialed us on, if any,
// else a new one, whose packets back this member reads.
func (t *tlsTransport) connect(s *packetSender) (net.Conn, error) {
	if in, ok := t.inboundFrom(s.addr.Name); ok {
		if c := t.bind(s, in.conn, in.peer, false); c != nil {
			return c, nil
		}
		return nil, net.ErrClosed
	}
	c, p, err := t.dial(s.addr, connPackets, gossipHandshakeTimeout, s.stop)
	if err != nil {
		return nil, err
	}
	if t.bind(s, c, p, true) == nil {
		return nil, net.ErrClosed
	}
	if tc, ok := c.(*tls.Conn); ok && isDuplex(tc) {
		t.wg.Add(1)
		go t.readDialed(s, c, p)
	}
	// The peer may have dialed us while we dialed it.
	t.preferInbound(s)
	if c := s.connection(); c != nil {
		return c, nil
	}
	return nil, net.ErrClosed
}

// readDialed passes on the packets the peer sends back on a duplex
// connection s dialed, until it closes.
func (t *tlsTransport) readDialed(s *packetSender, c net.Conn, p peer) {
	defer t.wg.Done()
	t.readPackets(c, p, 0)
	s.closeConnIf(c)
}

// preferInbound moves s from a connection it dialed onto one its peer
// dialed, when the peer's node name sorts before ours. When two members
// dial each other at once, both end up on the connection the lesser name
// dialed, and the other, closed here, goes: a pair holds one connection.
func (t *tlsTransport) preferInbound(s *packetSender) {
	if s.addr.Name == "" || s.addr.Name >= t.cfg.LocalName {
		return
	}
	in, ok := t.inboundFrom(s.addr.Name)
	if !ok {
		return
	}
	t.mu.Lock()
	s.peer = in.peer
	t.mu.Unlock()
	s.mu.Lock()
	if s.ended || !s.dialed || s.conn == nil {
		s.mu.Unlock()
		return
	}
	old := s.conn
	s.conn, s.dialed = in.conn, false
	s.mu.Unlock()
	old.Close()
}
