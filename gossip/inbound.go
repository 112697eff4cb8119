package gossip

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// The inbound side of the transport: connections other members dial.

// accept serves every inbound connection on its own goroutine. An accept
// that fails while the listener is open (out of file descriptors) is
// retried after a pause, as net/http does: returning would leave the
// member deaf to gossip for good.
func (t *tlsTransport) accept() {
	defer t.wg.Done()
	var pause time.Duration
	for {
		c, err := t.ln.Accept()
		if err != nil {
			select {
			case <-t.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				t.log.Error("gossip accept", "err", err)
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			t.log.Error("gossip accept failed; retrying", "retry_in", pause, "err", err)
			select {
			case <-t.done:
				return
			case <-time.After(pause):
			}
			continue
		}
		pause = 0
		if !t.track(c) {
			c.Close()
			return
		}
		t.wg.Add(1)
		go t.serve(c)
	}
}

func (t *tlsTransport) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns[c] = peer{}
	return true
}

// authenticated records who is at the other end of an inbound connection,
// unless it was closed meanwhile.
func (t *tlsTransport) authenticated(c net.Conn, p peer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.conns[c]; !ok {
		return false
	}
	t.conns[c] = p
	return true
}

func (t *tlsTransport) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// serve authenticates an inbound connection and hands it to memberlist:
// a stream as it is, packets frame by frame until the peer goes away.
func (t *tlsTransport) serve(raw net.Conn) {
	defer t.wg.Done()
	c := tls.Server(raw, t.cfg.Server)
	defer func() { t.closeInbound(c, raw) }()
	c.SetDeadline(time.Now().Add(gossipHandshakeTimeout))
	kind, node, p, err := t.admit(c)
	if err != nil {
		t.log.Debug("gossip connection refused", "peer", raw.RemoteAddr(), "err", err)
		return
	}
	c.SetDeadline(time.Time{})
	if !t.authenticated(raw, p) {
		return
	}
	t.guard.hear(p, time.Now())
	switch kind {
	case connStream:
		// memberlist owns it now and closes it; until then a removal
		// still closes it.
		select {
		case t.streams <- t.trackStream(c, raw, p):
			c = nil
		case <-t.done:
		}
	case connPackets:
		if isDuplex(c) {
			t.addInbound(node, c, p)
			defer t.removeInbound(node, c)
		}
		t.readPackets(c, p, t.cfg.IdleTimeout)
	}
}

// admit reads the preamble of an inbound connection, which completes the
// handshake, and checks the peer's credential and its node name.
func (t *tlsTransport) admit(c *tls.Conn) (byte, string, peer, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return 0, "", peer{}, err
	}
	switch hdr[0] {
	case connPackets, connStream:
	case legacyPackets, legacyStream:
		return 0, "", peer{}, errors.New("gossip: peer runs an older federate whose gossip names no node: upgrade it")
	default:
		return 0, "", peer{}, fmt.Errorf("gossip: unknown connection kind %q", hdr[0])
	}
	name := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, name); err != nil {
		return 0, "", peer{}, err
	}
	p, err := t.guard.authenticate(c.ConnectionState(), time.Now())
	if err != nil {
		return 0, "", p, err
	}
	if len(name) == 0 {
		return 0, "", p, errors.New("gossip: preamble names no node")
	}
	if err := t.guard.claim(p, string(name), "dialing"); err != nil {
		return 0, "", p, err
	}
	return hdr[0], string(name), p, nil
}

// closeInbound closes an inbound connection memberlist does not own;
// c is nil once memberlist does.
func (t *tlsTransport) closeInbound(c *tls.Conn, raw net.Conn) {
	if c != nil {
		c.Close()
		t.untrack(raw)
	}
}

// trackStream keeps a stream, known by key, among the connections that a
// removal closes, until memberlist closes it.
func (t *tlsTransport) trackStream(c net.Conn, key net.Conn, p peer) net.Conn {
	t.mu.Lock()
	t.conns[key] = p
	t.mu.Unlock()
	return &trackedStream{Conn: c, untrack: func() { t.untrack(key) }}
}

// trackedStream is a stream memberlist owns.
type trackedStream struct {
	net.Conn
	once    sync.Once
	untrack func()
}

func (s *trackedStream) Close() error {
	s.once.Do(s.untrack)
	return s.Conn.Close()
}

// readPackets passes frames to memberlist until the peer goes away or
// sends nothing for idle (if not zero). Every frame, heartbeats included,
// confirms the peer.
func (t *tlsTransport) readPackets(c net.Conn, p peer, idle time.Duration) {
	var hdr [4]byte
	for {
		if idle > 0 {
			c.SetReadDeadline(time.Now().Add(idle))
		}
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.guard.count(ClosedIdle)
				t.log.Debug("gossip connection idle; closing it", "peer", c.RemoteAddr(), "peer_id", p.id.String(), "idle", idle)
			}
			return
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > maxGossipPacket {
			t.log.Warn("gossip packet too large; closing the connection", "peer", c.RemoteAddr(), "bytes", n, "max", maxGossipPacket)
			return
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		t.guard.hear(p, time.Now())
		if n == 0 {
			continue // a heartbeat
		}
		select {
		case t.packets <- &memberlist.Packet{Buf: buf, From: c.RemoteAddr(), Timestamp: time.Now()}:
		case <-t.done:
			return
		}
	}
}
