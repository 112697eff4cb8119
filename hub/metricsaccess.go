package hub

import (
	"crypto/x509"
	"time"
)

// Small read accessors for the metrics collectors, kept apart from the
// files that own the fields.

// hubConnected reports whether the member's stream from the hub is synced.
func (m *Member) hubConnected() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hubSynced
}

// credentialExpiry is when the hub's own credential expires; gossip holds
// the same credential the gRPC server presents. Valid once Ready.
func (s *Server) credentialExpiry() time.Time {
	if s.gossip.cfg.Credential == nil {
		return time.Time{}
	}
	return s.gossip.cfg.Credential.Expiry()
}

// subscribers counts the open Subscribe streams.
func (s *Server) subscribers() int {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	return len(s.subs)
}

// earliest returns the earliest expiry among certs.
func earliest(certs []*x509.Certificate) time.Time {
	var out time.Time
	for _, c := range certs {
		if out.IsZero() || c.NotAfter.Before(out) {
			out = c.NotAfter
		}
	}
	return out
}
