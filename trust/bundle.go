package trust

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxBundleBytes bounds an encoded bundle.
const MaxBundleBytes = 64 << 10

var (
	// ErrSequenceRegression means a bundle is older than the one held.
	ErrSequenceRegression = errors.New("trust: bundle sequence is not newer than the one held")
	// ErrNotFederated means no bundle is held for a trust domain.
	ErrNotFederated = errors.New("trust: trust domain is not federated")
)

// ParseBundle decodes a SPIFFE bundle (JWKS) for td, with a size limit and
// the checks the federation relies on: X.509 authorities present and a
// sequence number.
func ParseBundle(td spiffeid.TrustDomain, data []byte) (*spiffebundle.Bundle, error) {
	if len(data) > MaxBundleBytes {
		return nil, fmt.Errorf("trust: bundle for %s is %d bytes; the limit is %d", td, len(data), MaxBundleBytes)
	}
	b, err := spiffebundle.Parse(td, data)
	if err != nil {
		return nil, fmt.Errorf("trust: bundle for %s: %w", td, err)
	}
	if len(b.X509Authorities()) == 0 {
		return nil, fmt.Errorf("trust: bundle for %s has no X.509 authorities", td)
	}
	if _, ok := b.SequenceNumber(); !ok {
		return nil, fmt.Errorf("trust: bundle for %s has no spiffe_sequence", td)
	}
	return b, nil
}

// BundleSet holds the newest bundle of every federated trust domain. It is
// an x509bundle.Source and a spiffebundle.Source, so TLS configurations and
// bundle endpoints use it directly and see updates at once.
type BundleSet struct {
	mu      sync.RWMutex // guards bundles
	bundles map[spiffeid.TrustDomain]*spiffebundle.Bundle
}

// NewBundleSet returns a set holding the given bundles.
func NewBundleSet(bundles ...*spiffebundle.Bundle) *BundleSet {
	s := &BundleSet{bundles: make(map[spiffeid.TrustDomain]*spiffebundle.Bundle)}
	for _, b := range bundles {
		s.bundles[b.TrustDomain()] = b
	}
	return s
}

// Update stores b if its sequence is newer than the held bundle's. An equal
// bundle is a no-op; an older one, or a different one with the same
// sequence, is refused.
func (s *BundleSet) Update(b *spiffebundle.Bundle) (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if changed, err = s.checkLocked(b); changed {
		s.bundles[b.TrustDomain()] = b.Clone()
	}
	return changed, err
}

// Replace stores b whatever the held bundle's sequence: for a trust
// domain whose owner started over with a new root and a new sequence.
func (s *BundleSet) Replace(b *spiffebundle.Bundle) (changed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.bundles[b.TrustDomain()]; ok && old.Equal(b) {
		return false
	}
	s.bundles[b.TrustDomain()] = b.Clone()
	return true
}

// Check reports what Update would do, without doing it.
func (s *BundleSet) Check(b *spiffebundle.Bundle) (changes bool, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.checkLocked(b)
}

func (s *BundleSet) checkLocked(b *spiffebundle.Bundle) (bool, error) {
	old, ok := s.bundles[b.TrustDomain()]
	if !ok {
		return true, nil
	}
	if old.Equal(b) {
		return false, nil
	}
	seq, _ := b.SequenceNumber()
	if oldSeq, _ := old.SequenceNumber(); seq <= oldSeq {
		return false, fmt.Errorf("%w: %s has sequence %d, got %d", ErrSequenceRegression, b.TrustDomain(), oldSeq, seq)
	}
	return true, nil
}

// Remove forgets a trust domain; its SVIDs are no longer accepted.
func (s *BundleSet) Remove(td spiffeid.TrustDomain) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.bundles[td]
	delete(s.bundles, td)
	return ok
}

// Sequence returns the sequence of the bundle held for td.
func (s *BundleSet) Sequence(td spiffeid.TrustDomain) (uint64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b, ok := s.bundles[td]
	if !ok {
		return 0, false
	}
	return b.SequenceNumber()
}

// TrustDomains returns the federated trust domains, sorted.
func (s *BundleSet) TrustDomains() []spiffeid.TrustDomain {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]spiffeid.TrustDomain, 0, len(s.bundles))
	for td := range s.bundles {
		out = append(out, td)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// GetBundleForTrustDomain implements spiffebundle.Source.
func (s *BundleSet) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	b, ok := s.bundles[td]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFederated, td)
	}
	return b, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (s *BundleSet) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b, err := s.GetBundleForTrustDomain(td)
	if err != nil {
		return nil, err
	}
	return b.X509Bundle(), nil
}

// SameKeys reports whether two bundles hold the same X.509 and JWT
// authorities, whatever their sequence and refresh hint.
func SameKeys(a, b *spiffebundle.Bundle) bool {
	return a.X509Bundle().Equal(b.X509Bundle()) && a.JWTBundle().Equal(b.JWTBundle())
}

// Expiry returns the earliest expiry among a bundle's X.509 authorities.
func Expiry(b *spiffebundle.Bundle) time.Time {
	var out time.Time
	for _, c := range b.X509Authorities() {
		if out.IsZero() || c.NotAfter.Before(out) {
			out = c.NotAfter
		}
	}
	return out
}
