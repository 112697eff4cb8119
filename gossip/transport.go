package gossip

import (
	"context"
	"crypto/tls"
	"fmt"
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
// federation through mesh gateways does). A connection starts with a
// preamble: one byte saying what it carries, then the dialing node's name
// (one length byte, then the name), which must belong to the identity in
// its certificate (identity.go). It carries memberlist's packets, as
// length-prefixed frames on a connection kept open for more (an empty
// frame is a heartbeat; queued per peer, packets.go), or one memberlist
// stream.
const (
	connPackets byte = 'P'
	connStream  byte = 'S'
	// What members before the preamble carried a node name sent; they are
	// refused with a message that says to upgrade them.
	legacyPackets byte = 'p'
	legacyStream  byte = 's'

	// maxGossipPacket bounds one packet frame; memberlist's own packets
	// stay under its 1400-byte UDP budget.
	maxGossipPacket = 64 << 10
	// gossipHandshakeTimeout bounds the TLS handshake and the preamble.
	gossipHandshakeTimeout = 10 * time.Second
	gossipWriteTimeout     = 5 * time.Second
	// sweepInterval is how often open connections are checked against
	// removals and certificate expiry.
	sweepInterval = time.Second
)

// transportConfig configures a tlsTransport.
type transportConfig struct {
	Bind, Advertise string
	Server, Client  *tls.Config
	// LocalName is this member's node name, sent in every preamble.
	LocalName string
	Guard     *guard
	// IdleTimeout closes an inbound packet connection that sends nothing.
	IdleTimeout time.Duration
	Log         *slog.Logger
}

// tlsTransport is a memberlist transport over mTLS streams.
type tlsTransport struct {
	cfg       transportConfig
	ln        net.Listener
	advertise *net.TCPAddr
	log       *slog.Logger
	guard     *guard
	packets   chan *memberlist.Packet
	streams   chan net.Conn
	done      chan struct{}
	wg        sync.WaitGroup

	mu      sync.Mutex // guards the fields below
	senders map[memberlist.Address]*packetSender
	// inbound are the duplex packet connections peers dialed, by the
	// peer's node name (duplex.go).
	inbound map[string]inboundPackets
	// conns are the inbound connections, by raw connection (their peer is
	// zero until authenticated), and the outbound streams.
	conns  map[net.Conn]peer
	closed bool
}

var _ memberlist.NodeAwareTransport = (*tlsTransport)(nil)

// newTLSTransport listens on cfg.Bind. cfg.Advertise ("host:port", an IP
// host) is the address other members dial; empty means the bound address.
func newTLSTransport(cfg transportConfig) (*tlsTransport, error) {
	ln, err := net.Listen("tcp", cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("gossip: gossip listen on %s: %w", cfg.Bind, err)
	}
	adv, err := advertiseAddr(ln.Addr().(*net.TCPAddr), cfg.Advertise)
	if err != nil {
		ln.Close()
		return nil, err
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if len(cfg.LocalName) > 255 {
		ln.Close()
		return nil, fmt.Errorf("gossip: node name %q is longer than 255 bytes", cfg.LocalName)
	}
	cfg.Server = withDuplex(cfg.Server)
	t := &tlsTransport{
		cfg: cfg, ln: ln, advertise: adv, log: cfg.Log, guard: cfg.Guard,
		packets: make(chan *memberlist.Packet, 256),
		streams: make(chan net.Conn, 16),
		done:    make(chan struct{}),
		senders: make(map[memberlist.Address]*packetSender),
		inbound: make(map[string]inboundPackets),
		conns:   make(map[net.Conn]peer),
	}
	t.wg.Add(2)
	go t.accept()
	go t.sweep()
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

// DialTimeout implements memberlist.Transport for callers without a node name.
func (t *tlsTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout opens a memberlist stream.
func (t *tlsTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, p, err := t.dial(addr, connStream, timeout, nil)
	if err != nil {
		return nil, err
	}
	return t.trackStream(c, c, p), nil
}

// dial connects over mTLS, naming the member's cluster in SNI so that its
// gateway routes the connection to the member's gossip listener. The
// server must present the identity of the node dialed, and a credential
// that is still good. Shutdown, or closing stop, ends a dial that waits
// on a peer that does not answer.
func (t *tlsTransport) dial(addr memberlist.Address, kind byte, timeout time.Duration, stop <-chan struct{}) (net.Conn, peer, error) {
	conf := t.cfg.Client.Clone()
	conf.ServerName = gossipServerName(addr.Name)
	if kind == connPackets {
		conf.NextProtos = []string{duplexPackets}
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: conf}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-t.done:
		case <-stop:
		case <-ctx.Done():
		}
		cancel()
	}()
	c, err := d.DialContext(ctx, "tcp", addr.Addr)
	if err != nil {
		return nil, peer{}, fmt.Errorf("gossip: gossip dial %s: %w", addr.String(), err)
	}
	p, err := t.guard.authenticate(c.(*tls.Conn).ConnectionState(), time.Now())
	if err == nil {
		err = t.guard.claim(p, addr.Name, "dialed")
	}
	if err != nil {
		c.Close()
		return nil, p, fmt.Errorf("gossip: gossip dial %s: %w", addr.String(), err)
	}
	t.guard.hear(p, time.Now())
	c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write(preamble(kind, t.cfg.LocalName)); err != nil {
		c.Close()
		return nil, p, fmt.Errorf("gossip: gossip dial %s: %w", addr.String(), err)
	}
	c.SetWriteDeadline(time.Time{})
	return c, p, nil
}

func preamble(kind byte, name string) []byte {
	return append([]byte{kind, byte(len(name))}, name...)
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
	for c := range t.conns {
		c.Close()
	}
	senders := t.senders
	t.senders = nil
	t.mu.Unlock()
	for _, s := range senders {
		s.closeConn() // ends a write in progress; runSender ends on done
	}
	t.wg.Wait()
	return nil
}
