package gossip

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/federate/federate/eastwest/sni"
	"github.com/federate/federate/registry"
)

// Node travels over mTLS TCP connections only, never UDP: each cluster
// advertises its east-west gateway as its gossip address, and peers reach
// it there with the server name gossip.<cluster>.federate.internal, so a
// cluster needs one port reachable from other networks (as Consul's WAN
// federation through mesh gateways does). A connection starts with one
// byte saying what it carries: memberlist's packets, as length-prefixed
// frames on a connection kept open for more, or one memberlist stream.
const (
	connPackets byte = 'p'
	connStream  byte = 's'

	// maxGossipPacket bounds one packet frame; memberlist's own packets
	// stay under its 1400-byte UDP budget.
	maxGossipPacket = 64 << 10
	// gossipHandshakeTimeout bounds the TLS handshake and the kind byte.
	gossipHandshakeTimeout = 10 * time.Second
	gossipWriteTimeout     = 5 * time.Second
)

// tlsTransport is a memberlist transport over mTLS streams.
type tlsTransport struct {
	ln        net.Listener
	server    *tls.Config
	client    *tls.Config
	advertise *net.TCPAddr
	log       *slog.Logger
	packets   chan *memberlist.Packet
	streams   chan net.Conn
	done      chan struct{}
	wg        sync.WaitGroup

	mu      sync.Mutex // guards the fields below
	senders map[memberlist.Address]*packetSender
	inbound map[net.Conn]struct{}
	closed  bool
}

var _ memberlist.NodeAwareTransport = (*tlsTransport)(nil)

// packetSender is an outgoing connection that carries packet frames.
type packetSender struct {
	mu   sync.Mutex
	conn net.Conn
}

// newTLSTransport listens on bind. advertise ("host:port", an IP host) is
// the address other members dial; empty means the bound address.
func newTLSTransport(bind, advertise string, server, client *tls.Config, log *slog.Logger) (*tlsTransport, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("gossip: gossip listen on %s: %w", bind, err)
	}
	adv, err := advertiseAddr(ln.Addr().(*net.TCPAddr), advertise)
	if err != nil {
		ln.Close()
		return nil, err
	}
	t := &tlsTransport{
		ln: ln, server: server, client: client, advertise: adv, log: log,
		packets: make(chan *memberlist.Packet, 256),
		streams: make(chan net.Conn, 16),
		done:    make(chan struct{}),
		senders: make(map[memberlist.Address]*packetSender),
		inbound: make(map[net.Conn]struct{}),
	}
	t.wg.Add(1)
	go t.accept()
	return t, nil
}

// advertiseAddr resolves what members dial: the advertise address when
// given, else the bound address, which must then be a specific IP.
func advertiseAddr(bound *net.TCPAddr, advertise string) (*net.TCPAddr, error) {
	if advertise == "" {
		if bound.IP.IsUnspecified() {
			return nil, fmt.Errorf("gossip: gossip is bound to %s, which members cannot dial: give an advertise address (the cluster's gateway)", bound)
		}
		return bound, nil
	}
	host, port, err := net.SplitHostPort(advertise)
	if err != nil {
		return nil, fmt.Errorf("gossip: gossip advertise address %q: want host:port", advertise)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("gossip: gossip advertise address %q: bad port", advertise)
	}
	if p == 0 {
		p = uint64(bound.Port)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		ips, err := net.LookupIP(host)
		if err != nil || len(ips) == 0 {
			return nil, fmt.Errorf("gossip: gossip advertise address %q: resolve %s: %v", advertise, host, err)
		}
		ip = ips[0]
	}
	return &net.TCPAddr{IP: ip, Port: int(p)}, nil
}

// Addr is the address the transport listens on.
func (t *tlsTransport) Addr() net.Addr { return t.ln.Addr() }

// FinalAdvertiseAddr implements memberlist.Transport; the transport's own
// advertise address wins over memberlist's guess.
func (t *tlsTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.advertise.IP, t.advertise.Port, nil
}

func (t *tlsTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }
func (t *tlsTransport) StreamCh() <-chan net.Conn           { return t.streams }

// WriteTo implements memberlist.Transport for callers without a node name.
func (t *tlsTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends one packet on the connection kept for addr, dialing
// it first if needed. A connection the peer closed is replaced once.
func (t *tlsTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if len(b) > maxGossipPacket {
		return time.Time{}, fmt.Errorf("gossip: gossip packet of %d bytes exceeds %d", len(b), maxGossipPacket)
	}
	frame := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(frame, uint32(len(b)))
	copy(frame[4:], b)
	var err error
	for range 2 {
		var s *packetSender
		if s, err = t.sender(addr); err != nil {
			return time.Time{}, err
		}
		if err = s.write(frame); err == nil {
			return time.Now(), nil
		}
		t.dropSender(addr, s)
	}
	return time.Time{}, fmt.Errorf("gossip: gossip packet to %s: %w", addr.String(), err)
}

func (t *tlsTransport) sender(addr memberlist.Address) (*packetSender, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, net.ErrClosed
	}
	s := t.senders[addr]
	if s == nil {
		s = new(packetSender)
		t.senders[addr] = s
	}
	t.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		c, err := t.dial(addr, connPackets, gossipHandshakeTimeout)
		if err != nil {
			return nil, err
		}
		s.conn = c
	}
	return s, nil
}

func (s *packetSender) write(frame []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return net.ErrClosed
	}
	s.conn.SetWriteDeadline(time.Now().Add(gossipWriteTimeout))
	_, err := s.conn.Write(frame)
	return err
}

func (t *tlsTransport) dropSender(addr memberlist.Address, s *packetSender) {
	t.mu.Lock()
	if t.senders[addr] == s {
		delete(t.senders, addr)
	}
	t.mu.Unlock()
	s.mu.Lock()
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	s.mu.Unlock()
}

// DialTimeout implements memberlist.Transport for callers without a node name.
func (t *tlsTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout opens a memberlist stream.
func (t *tlsTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.dial(addr, connStream, timeout)
}

// dial connects over mTLS, naming the member's cluster in SNI so that its
// gateway routes the connection to the member's gossip listener.
func (t *tlsTransport) dial(addr memberlist.Address, kind byte, timeout time.Duration) (net.Conn, error) {
	conf := t.client.Clone()
	conf.ServerName = gossipServerName(addr.Name)
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: conf}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr.Addr)
	if err != nil {
		return nil, fmt.Errorf("gossip: gossip dial %s: %w", addr.String(), err)
	}
	c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{kind}); err != nil {
		c.Close()
		return nil, fmt.Errorf("gossip: gossip dial %s: %w", addr.String(), err)
	}
	c.SetWriteDeadline(time.Time{})
	return c, nil
}

// gossipServerName is the SNI that reaches a member: the internal gossip
// name of its cluster. A member reached directly ignores it.
func gossipServerName(node string) string {
	base := memberBase(node)
	if base == "" || registry.ValidClusterName(base) != nil {
		return ""
	}
	return sni.Internal(sni.Gossip, base)
}

// memberBase strips the per-start suffix New adds to a node name.
func memberBase(node string) string {
	if i := strings.LastIndexByte(node, '-'); i > 0 {
		return node[:i]
	}
	return node
}

func (t *tlsTransport) accept() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			select {
			case <-t.done:
			default:
				t.log.Error("gossip accept", "err", err)
			}
			return
		}
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
	t.inbound[c] = struct{}{}
	return true
}

func (t *tlsTransport) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.inbound, c)
	t.mu.Unlock()
}

// serve authenticates an inbound connection and hands it to memberlist:
// a stream as it is, packets frame by frame until the peer goes away.
func (t *tlsTransport) serve(raw net.Conn) {
	defer t.wg.Done()
	c := tls.Server(raw, t.server)
	c.SetDeadline(time.Now().Add(gossipHandshakeTimeout))
	var kind [1]byte
	if _, err := io.ReadFull(c, kind[:]); err != nil {
		t.log.Debug("gossip connection refused", "peer", raw.RemoteAddr(), "err", err)
		t.closeInbound(c, raw)
		return
	}
	c.SetDeadline(time.Time{})
	switch kind[0] {
	case connStream:
		t.untrack(raw) // memberlist owns it now and closes it
		select {
		case t.streams <- c:
		case <-t.done:
			c.Close()
		}
	case connPackets:
		t.readPackets(c)
		t.closeInbound(c, raw)
	default:
		t.log.Debug("gossip connection refused", "peer", raw.RemoteAddr(), "err", fmt.Sprintf("unknown kind %q", kind[0]))
		t.closeInbound(c, raw)
	}
}

func (t *tlsTransport) closeInbound(c *tls.Conn, raw net.Conn) {
	c.Close()
	t.untrack(raw)
}

func (t *tlsTransport) readPackets(c *tls.Conn) {
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
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
		select {
		case t.packets <- &memberlist.Packet{Buf: buf, From: c.RemoteAddr(), Timestamp: time.Now()}:
		case <-t.done:
			return
		}
	}
}

// Shutdown implements memberlist.Transport.
func (t *tlsTransport) Shutdown() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.done)
	t.ln.Close()
	for c := range t.inbound {
		c.Close()
	}
	senders := t.senders
	t.senders = nil
	t.mu.Unlock()
	for _, s := range senders {
		s.mu.Lock()
		if s.conn != nil {
			s.conn.Close()
		}
		s.mu.Unlock()
	}
	t.wg.Wait()
	return nil
}
