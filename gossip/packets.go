package gossip

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Packets to each peer are queued and sent by a goroutine of that peer's.
// memberlist sends packets from its packet handler (an ack, an indirect
// ping for a suspect peer) and from its gossip and probe loops, and
// expects a send to return at once, as UDP does. A peer that is frozen
// (SIGSTOP, a hung host), not gone, still accepts TCP connections in the
// kernel and then never completes the TLS handshake: sending inline would
// stall each of those loops for the handshake timeout, and with them every
// digest bound for the peers that do answer.
const (
	// packetQueueLen and packetQueueBytes bound what waits for one peer;
	// beyond them the oldest packets are dropped, as a full UDP socket
	// drops them, and memberlist recovers. memberlist's packets stay under
	// 1,400 bytes, so the count bounds first.
	packetQueueLen   = 128
	packetQueueBytes = 1 << 20
	// senderIdleTimeout ends the sender of a peer nothing was sent to for
	// this long, such as one that left at an address no one reuses.
	senderIdleTimeout = time.Minute
)

// Reasons a packet is dropped before it is sent, as counted in
// Stats.Dropped.
const (
	DroppedQueueFull   = "queue_full"  // more waited for the peer than the queue holds: the oldest went
	DroppedUnreachable = "unreachable" // the peer could not be dialed or refused us
	DroppedRevoked     = "revoked"     // the peer's credential was revoked while they waited
)

// packetSender queues the packets for one peer and sends them, from
// runSender, on a connection kept open for more.
type packetSender struct {
	addr memberlist.Address
	wake chan struct{} // a packet was queued
	stop chan struct{} // closed when the sender is dropped
	peer peer          // who answered the last dial; guarded by the transport's mu

	mu     sync.Mutex // guards the fields below; taken after the transport's mu
	conn   net.Conn
	dialed bool     // conn is ours, not one the peer dialed (duplex.go)
	queue  [][]byte // frames, oldest first
	queued int      // bytes in queue
	ended  bool     // stop is closed
}

// WriteToAddress queues one packet for addr and returns without waiting
// for the peer; the packet is lost, as over UDP, if the peer cannot be
// reached or too many packets wait for it.
func (t *tlsTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if len(b) > maxGossipPacket {
		return time.Time{}, fmt.Errorf("gossip: gossip packet of %d bytes exceeds %d", len(b), maxGossipPacket)
	}
	frame := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(frame, uint32(len(b)))
	copy(frame[4:], b)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return time.Time{}, net.ErrClosed
	}
	s := t.senders[addr]
	if s == nil {
		s = &packetSender{addr: addr, wake: make(chan struct{}, 1), stop: make(chan struct{})}
		t.senders[addr] = s
		t.wg.Add(1)
		go t.runSender(s)
	}
	if dropped := s.push(frame); dropped > 0 {
		t.guard.drop(DroppedQueueFull, dropped)
	}
	signal(s.wake)
	return time.Now(), nil
}

// runSender sends s's packets until s is dropped, the transport shuts
// down, or nothing was sent for senderIdleTimeout.
func (t *tlsTransport) runSender(s *packetSender) {
	defer t.wg.Done()
	defer s.closeConn()
	idle := time.NewTimer(senderIdleTimeout)
	defer idle.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-s.stop:
			return
		case <-s.wake:
			t.sendQueued(s)
		case <-idle.C:
			if t.retire(s) {
				return
			}
		}
		idle.Reset(senderIdleTimeout)
	}
}

// sendQueued sends what waits for s. When the peer cannot be reached,
// what waits for it is dropped too: it is stale by the time a dial gives
// up, and memberlist sends again what still matters.
func (t *tlsTransport) sendQueued(s *packetSender) {
	for {
		frame := s.pop()
		if frame == nil {
			return
		}
		if err := t.send(s, frame); err != nil {
			n := 1 + s.drain()
			t.guard.drop(DroppedUnreachable, n)
			t.log.Debug("gossip packets dropped: peer unreachable", "peer", s.addr.String(), "dropped", n, "err", err)
			return
		}
	}
}

// send writes one frame, connecting first if needed; a connection the
// peer closed is replaced once.
func (t *tlsTransport) send(s *packetSender, frame []byte) error {
	var err error
	for range 2 {
		conn := s.connection()
		if conn == nil {
			if conn, err = t.connect(s); err != nil {
				return err
			}
		}
		conn.SetWriteDeadline(time.Now().Add(gossipWriteTimeout))
		if _, err = conn.Write(frame); err == nil {
			return nil
		}
		s.closeConnIf(conn)
	}
	return err
}

// bind keeps c, authenticated as p, for s's next packets, and returns it;
// or, if s was dropped meanwhile, closes c if s dialed it and returns nil.
func (t *tlsTransport) bind(s *packetSender, c net.Conn, p peer, dialed bool) net.Conn {
	t.mu.Lock()
	s.peer = p
	t.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		if dialed {
			c.Close()
		}
		return nil
	}
	s.conn, s.dialed = c, dialed
	return c
}

// retire removes an idle sender, unless a packet came for it meanwhile;
// packets are queued under the same lock, so none is left behind.
func (t *tlsTransport) retire(s *packetSender) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.pending() > 0 {
		return false
	}
	if t.senders[s.addr] == s {
		delete(t.senders, s.addr)
	}
	return true
}

// dropSender ends s: its connection is closed and what waits for it is
// dropped, counted under reason.
func (t *tlsTransport) dropSender(s *packetSender, reason string) {
	t.mu.Lock()
	if t.senders[s.addr] == s {
		delete(t.senders, s.addr)
	}
	t.mu.Unlock()
	s.mu.Lock()
	if !s.ended {
		s.ended = true
		close(s.stop)
	}
	s.mu.Unlock()
	if n := s.drain(); n > 0 {
		t.guard.drop(reason, n)
	}
	s.closeConn()
}

// push queues frame, dropping the oldest frames to stay within the
// queue's bounds, and returns how many it dropped.
func (s *packetSender) push(frame []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	dropped := 0
	for len(s.queue) > 0 && (len(s.queue) >= packetQueueLen || s.queued+len(frame) > packetQueueBytes) {
		s.queued -= len(s.queue[0])
		s.queue[0] = nil
		s.queue = s.queue[1:]
		dropped++
	}
	s.queue = append(s.queue, frame)
	s.queued += len(frame)
	return dropped
}

// pop takes the oldest frame, or nil if none waits.
func (s *packetSender) pop() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return nil
	}
	frame := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	s.queued -= len(frame)
	return frame
}

// drain drops every frame that waits and returns how many.
func (s *packetSender) drain() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.queue)
	s.queue, s.queued = nil, 0
	return n
}

func (s *packetSender) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// dialedConnection is s's connection if s dialed it.
func (s *packetSender) dialedConnection() net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dialed {
		return nil
	}
	return s.conn
}

func (s *packetSender) connection() net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// closeConn closes s's connection, which ends a write in progress.
func (s *packetSender) closeConn() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// closeConnIf closes s's connection if it is still c: a write on c
// failed, or c's reader stopped.
func (s *packetSender) closeConnIf(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == c {
		s.conn.Close()
		s.conn = nil
	}
}
