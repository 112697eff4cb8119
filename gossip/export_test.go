package gossip

import (
	"crypto/tls"
	"log/slog"
)

// What the transport tests in package gossip_test see of the transport.

// Transport is the mTLS memberlist transport.
type Transport = tlsTransport

// Frame kinds and limits of the transport.
const (
	ConnPackets     = connPackets
	MaxGossipPacket = maxGossipPacket
)

// NewTransport listens on bind, as New's memberlist does.
func NewTransport(bind, advertise string, server, client *tls.Config, log *slog.Logger) (*Transport, error) {
	return newTLSTransport(bind, advertise, server, client, log)
}

// Senders counts the outgoing packet connections kept.
func (t *tlsTransport) Senders() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.senders)
}

// Inbound counts the inbound connections being served.
func (t *tlsTransport) Inbound() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.inbound)
}

// DropInbound closes every inbound connection, as a peer that goes away
// does.
func (t *tlsTransport) DropInbound() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.inbound {
		c.Close()
	}
}
