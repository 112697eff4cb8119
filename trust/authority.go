package trust

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults for a cluster's workload CA.
const (
	DefaultSVIDTTL     = time.Hour
	MaxSVIDTTL         = 24 * time.Hour
	DefaultRefreshHint = 5 * time.Minute
)

// Root rotation phases, in order.
const (
	// PhaseStable: one root, which signs.
	PhaseStable = "stable"
	// PhaseAdded: a new root is published beside the old one, which still signs.
	PhaseAdded = "added"
	// PhaseSwitched: the new root signs; the old one is trusted until every
	// SVID it signed has expired.
	PhaseSwitched = "switched"
)

var (
	// ErrOutsideTrustDomain means a requested ID is not in the CA's domain.
	ErrOutsideTrustDomain = errors.New("trust: ID is outside the CA's trust domain")
	// ErrRotation means a rotation step was asked for in the wrong phase.
	ErrRotation = errors.New("trust: rotation step not allowed now")
)

// Authority is a cluster's workload CA for its own trust domain. It issues
// X.509-SVIDs, publishes its roots as a SPIFFE bundle, and rotates its root
// with an overlap: add, switch, drop. Its state survives restarts through
// Marshal and LoadAuthority.
type Authority struct {
	td  spiffeid.TrustDomain
	now func() time.Time

	mu    sync.RWMutex // guards st and the parsed fields
	st    authorityState
	roots []*CA // parsed st.Roots; roots[st.Signing] signs unless plugged
	plug  *plugin
}

// authorityState is what persists.
type authorityState struct {
	Sequence    uint64        `json:"sequence"`
	Phase       string        `json:"phase"`
	PhaseSince  time.Time     `json:"phaseSince"`
	Roots       [][]byte      `json:"roots"` // CA.MarshalPEM
	Signing     int           `json:"signing"`
	RefreshHint time.Duration `json:"refreshHint"`
	MaxTTL      time.Duration `json:"maxTTL"`
}

// plugin is an Istio-style plug-in CA: an intermediate that signs, its
// chain, and roots that only verify.
type plugin struct {
	signer *CA
	chain  []*x509.Certificate // the signer and its parents, roots excluded
	roots  []*x509.Certificate
}

// NewAuthority generates a root for td.
func NewAuthority(td spiffeid.TrustDomain, now func() time.Time) (*Authority, error) {
	if now == nil {
		now = time.Now
	}
	ca, err := NewCA(td, now())
	if err != nil {
		return nil, err
	}
	pem, err := ca.MarshalPEM()
	if err != nil {
		return nil, err
	}
	a := &Authority{td: td, now: now}
	a.st = authorityState{Sequence: 1, Phase: PhaseStable, PhaseSince: now(), Roots: [][]byte{pem}, RefreshHint: DefaultRefreshHint, MaxTTL: MaxSVIDTTL}
	a.roots = []*CA{ca}
	return a, nil
}

// LoadAuthority restores what Marshal wrote.
func LoadAuthority(td spiffeid.TrustDomain, data []byte, now func() time.Time) (*Authority, error) {
	if now == nil {
		now = time.Now
	}
	a := &Authority{td: td, now: now}
	if err := json.Unmarshal(data, &a.st); err != nil {
		return nil, fmt.Errorf("trust: authority state: %w", err)
	}
	for i, p := range a.st.Roots {
		ca, err := ParseCA(td, p)
		if err != nil {
			return nil, fmt.Errorf("trust: authority root %d: %w", i, err)
		}
		a.roots = append(a.roots, ca)
	}
	if len(a.roots) == 0 || a.st.Signing < 0 || a.st.Signing >= len(a.roots) {
		return nil, errors.New("trust: authority state has no signing root")
	}
	return a, nil
}

// Istio's plug-in CA file names ("cacerts").
const (
	CACertFile    = "ca-cert.pem"
	CAKeyFile     = "ca-key.pem"
	RootCertFile  = "root-cert.pem"
	CertChainFile = "cert-chain.pem"
)

// LoadPluginAuthority uses Istio cacerts files in dir: ca-cert.pem and
// ca-key.pem sign, cert-chain.pem is the chain from ca-cert.pem up to the
// root, and root-cert.pem holds the roots that go into the bundle. Several
// clusters given the same root share one trust domain.
func LoadPluginAuthority(td spiffeid.TrustDomain, dir string, now func() time.Time) (*Authority, error) {
	if now == nil {
		now = time.Now
	}
	read := func(name string) ([]*x509.Certificate, crypto.Signer, error) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, nil, fmt.Errorf("trust: plug-in CA: %w", err)
		}
		certs, key, err := parsePEM(data)
		if err != nil {
			return nil, nil, fmt.Errorf("trust: plug-in CA %s: %w", filepath.Join(dir, name), err)
		}
		return certs, key, nil
	}
	caCerts, _, err := read(CACertFile)
	if err != nil {
		return nil, err
	}
	_, key, err := read(CAKeyFile)
	if err != nil {
		return nil, err
	}
	roots, _, err := read(RootCertFile)
	if err != nil {
		return nil, err
	}
	chain, _, err := read(CertChainFile)
	if err != nil {
		return nil, err
	}
	if len(caCerts) != 1 || key == nil || len(roots) == 0 {
		return nil, fmt.Errorf("trust: plug-in CA in %s needs one certificate in %s, a key in %s and roots in %s", dir, CACertFile, CAKeyFile, RootCertFile)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	if _, err := caCerts[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("trust: plug-in CA %s does not chain to %s: %w", CACertFile, RootCertFile, err)
	}
	up := []*x509.Certificate{caCerts[0]}
	for _, c := range chain {
		if !c.Equal(caCerts[0]) && !isRoot(c, roots) {
			up = append(up, c)
		}
	}
	a := &Authority{td: td, now: now}
	a.st = authorityState{Sequence: 1, Phase: PhaseStable, PhaseSince: now(), RefreshHint: DefaultRefreshHint, MaxTTL: MaxSVIDTTL}
	a.plug = &plugin{signer: &CA{TrustDomain: td, Cert: caCerts[0], Key: key}, chain: up, roots: roots}
	return a, nil
}

func isRoot(c *x509.Certificate, roots []*x509.Certificate) bool {
	for _, r := range roots {
		if r.Equal(c) {
			return true
		}
	}
	return false
}

// TrustDomain returns the authority's trust domain.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.td }

// Marshal encodes the state for LoadAuthority. A plug-in authority has no
// state of its own: its files are the state.
func (a *Authority) Marshal() ([]byte, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.plug != nil {
		return nil, errors.New("trust: a plug-in CA is kept in its files")
	}
	return json.Marshal(a.st)
}

// SetRefreshHint sets the refresh hint published in the bundle.
func (a *Authority) SetRefreshHint(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.RefreshHint = d
}

// Issue signs an SVID for id with pub. The lifetime is capped at MaxSVIDTTL
// and by the signing CA's own expiry. It returns the chain, leaf first.
func (a *Authority) Issue(id spiffeid.ID, pub crypto.PublicKey, ttl time.Duration) ([]*x509.Certificate, error) {
	if !id.MemberOf(a.td) {
		return nil, fmt.Errorf("%w: %s is not in %s", ErrOutsideTrustDomain, id, a.td)
	}
	if ttl <= 0 {
		ttl = DefaultSVIDTTL
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	ttl = min(ttl, a.st.MaxTTL)
	signer, chain := a.signerLocked()
	leaf, err := signer.Issue(id, pub, ttl, a.now())
	if err != nil {
		return nil, err
	}
	return append([]*x509.Certificate{leaf}, chain...), nil
}

// IssueCSR is Issue for a PKCS#10 request; names in the request are ignored.
func (a *Authority) IssueCSR(csrDER []byte, id spiffeid.ID, ttl time.Duration) ([]*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("trust: parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("trust: certificate request signature: %w", err)
	}
	return a.Issue(id, csr.PublicKey, ttl)
}

// IssueCredential issues an SVID with a fresh key.
func (a *Authority) IssueCredential(id spiffeid.ID, ttl time.Duration) (*Credential, error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	chain, err := a.Issue(id, key.Public(), ttl)
	if err != nil {
		return nil, err
	}
	return NewCredential(chain, key)
}

func (a *Authority) signerLocked() (*CA, []*x509.Certificate) {
	if a.plug != nil {
		return a.plug.signer, a.plug.chain
	}
	return a.roots[a.st.Signing], nil
}

// Bundle returns the SPIFFE bundle: every trusted root, the sequence and
// the refresh hint.
func (a *Authority) Bundle() *spiffebundle.Bundle {
	a.mu.RLock()
	defer a.mu.RUnlock()
	b := spiffebundle.New(a.td)
	if a.plug != nil {
		b.SetX509Authorities(a.plug.roots)
	} else {
		for _, r := range a.roots {
			b.AddX509Authority(r.Cert)
		}
	}
	b.SetSequenceNumber(a.st.Sequence)
	b.SetRefreshHint(a.st.RefreshHint)
	return b
}

// RotationStatus describes the authority for status output.
type RotationStatus struct {
	Phase      string
	PhaseSince time.Time
	Sequence   uint64
	// RootExpiry is the earliest expiry among the trusted roots.
	RootExpiry time.Time
	Plugin     bool
}

// Status returns the rotation phase, bundle sequence and root expiry.
func (a *Authority) Status() RotationStatus {
	b := a.Bundle()
	a.mu.RLock()
	defer a.mu.RUnlock()
	return RotationStatus{Phase: a.st.Phase, PhaseSince: a.st.PhaseSince, Sequence: a.st.Sequence, RootExpiry: Expiry(b), Plugin: a.plug != nil}
}

// AddRoot starts a rotation: a new root is trusted (the bundle's sequence
// moves on) while the old one still signs.
func (a *Authority) AddRoot() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.plug != nil {
		return fmt.Errorf("%w: %s uses a plug-in CA: replace its %s files instead", ErrRotation, a.td, CACertFile)
	}
	if a.st.Phase != PhaseStable {
		next := "it switches signing once every live member holds the new root"
		if a.st.Phase == PhaseSwitched {
			next = "it ends on its own when the old root is dropped, at " + a.st.PhaseSince.Add(a.st.MaxTTL).UTC().Format(time.RFC3339)
		}
		return fmt.Errorf("%w: a rotation of %s is already in phase %q: %s; start the next one once 'federate status' shows its ROTATION stable",
			ErrRotation, a.td, a.st.Phase, next)
	}
	ca, err := NewCA(a.td, a.now())
	if err != nil {
		return err
	}
	pem, err := ca.MarshalPEM()
	if err != nil {
		return err
	}
	a.roots = append(a.roots, ca)
	a.st.Roots = append(a.st.Roots, pem)
	a.st.Sequence++
	a.setPhaseLocked(PhaseAdded)
	return nil
}

// SwitchSigning makes the newest root sign. Call it once every member
// trusts the new root.
func (a *Authority) SwitchSigning() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.Phase != PhaseAdded {
		return fmt.Errorf("%w: switching needs phase %q, %s is %q", ErrRotation, PhaseAdded, a.td, a.st.Phase)
	}
	a.st.Signing = len(a.roots) - 1
	a.setPhaseLocked(PhaseSwitched)
	return nil
}

// DropOldRoots removes every root but the signing one, ending the rotation.
// It refuses until the longest SVID the old root signed has expired.
func (a *Authority) DropOldRoots() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.Phase != PhaseSwitched {
		return fmt.Errorf("%w: dropping needs phase %q, %s is %q", ErrRotation, PhaseSwitched, a.td, a.st.Phase)
	}
	if wait := a.st.PhaseSince.Add(a.st.MaxTTL).Sub(a.now()); wait > 0 {
		return fmt.Errorf("%w: SVIDs of the old root may live %s more", ErrRotation, wait.Round(time.Second))
	}
	signing := a.roots[a.st.Signing]
	a.roots = []*CA{signing}
	a.st.Roots = [][]byte{a.st.Roots[a.st.Signing]}
	a.st.Signing = 0
	a.st.Sequence++
	a.setPhaseLocked(PhaseStable)
	return nil
}

// DropAfter returns when DropOldRoots will be allowed.
func (a *Authority) DropAfter() time.Time {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.st.PhaseSince.Add(a.st.MaxTTL)
}

// SetMaxTTL caps SVID lifetimes, and so the overlap a rotation waits for.
func (a *Authority) SetMaxTTL(d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.MaxTTL = d
}

func (a *Authority) setPhaseLocked(p string) {
	a.st.Phase = p
	a.st.PhaseSince = a.now()
}
