package gossip

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// What the transport tests in package gossip_test see of the transport.

// Transport is the mTLS memberlist transport.
type Transport = tlsTransport

// Frame kinds and limits of the transport.
const (
	ConnPackets     = connPackets
	LegacyPackets   = legacyPackets
	MaxGossipPacket = maxGossipPacket
)

// TransportConfig configures NewTransport.
type TransportConfig struct {
	Server, Client *tls.Config
	// Name is the node name the transport sends in its preambles.
	Name        string
	TrustDomain spiffeid.TrustDomain
	Revoked     func(string, *x509.Certificate) bool
	IdleTimeout time.Duration
	Log         *slog.Logger
}

// NewTransport listens on a loopback port, as New's memberlist does.
func NewTransport(c TransportConfig) (*Transport, error) {
	return newTLSTransport(transportConfig{
		Bind: "127.0.0.1:0", Server: c.Server, Client: c.Client, LocalName: c.Name,
		Guard: newGuard(c.TrustDomain, c.Revoked, c.Log), IdleTimeout: c.IdleTimeout, Log: c.Log,
	})
}

// Stats is what the transport refused, and its open connections.
func (t *tlsTransport) Stats() Stats {
	s := t.guard.stats()
	s.Open = t.openByPeer()
	return s
}

// Preamble is what a dialing node sends first.
func Preamble(kind byte, name string) []byte { return preamble(kind, name) }

// Senders counts the outgoing packet connections kept.
func (t *tlsTransport) Senders() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.senders)
}

// Queued counts the packets that wait to be sent, to every peer.
func (t *tlsTransport) Queued() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, s := range t.senders {
		n += s.pending()
	}
	return n
}

// Limits of the packet queue of one peer.
const (
	PacketQueueLen   = packetQueueLen
	PacketQueueBytes = packetQueueBytes
)

// Inbound counts the inbound connections being served.
func (t *tlsTransport) Inbound() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// DropInbound closes every inbound connection, as a peer that goes away
// does.
func (t *tlsTransport) DropInbound() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		c.Close()
	}
}

// DropSenders closes the connections this transport sends packets on, as
// when they break.
func (t *tlsTransport) DropSenders() {
	t.mu.Lock()
	senders := make([]*packetSender, 0, len(t.senders))
	for _, s := range t.senders {
		senders = append(senders, s)
	}
	t.mu.Unlock()
	for _, s := range senders {
		s.closeConn()
	}
}
