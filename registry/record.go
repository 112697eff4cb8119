package registry

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/federate/federate/registry/registrypb"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
)

// MaxRecordBytes bounds one encoded record (one service with its endpoints).
const MaxRecordBytes = 1 << 20

// ClockSkew is how far a record's signing time may lie outside its signer's
// validity period.
const ClockSkew = 5 * time.Minute

// ClusterIDPath is the SPIFFE ID path of a cluster credential:
// spiffe://<mesh>/cluster/<name>.
const ClusterIDPath = "/cluster/"

// Signer signs the records of one cluster with its cluster credential.
type Signer struct {
	Cluster string
	Key     crypto.Signer
	// Cert is the DER certificate of Key, issued for the cluster's SPIFFE ID.
	Cert []byte
}

// Sign encodes rec deterministically and signs it.
func (s *Signer) Sign(rec *Record) (*registrypb.SignedRecord, error) {
	if rec.GetCluster() != s.Cluster {
		return nil, fmt.Errorf("%w: signer of %q asked to sign for %q", ErrWrongOwner, s.Cluster, rec.GetCluster())
	}
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("registry: encode record %q: %w", rec.GetKey(), err)
	}
	if len(body) > MaxRecordBytes {
		return nil, fmt.Errorf("%w: service %q encodes to %d bytes; the limit is %d bytes", ErrTooLarge, rec.GetKey(), len(body), MaxRecordBytes)
	}
	digest := sha256.Sum256(body)
	sig, err := s.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("registry: sign record %q: %w", rec.GetKey(), err)
	}
	return &registrypb.SignedRecord{Record: body, Signature: sig, Signer: s.Cert}, nil
}

// Verifier checks that records were signed by their own cluster's
// credential, issued by the mesh CA. It caches verified signers, so the
// chain is checked once per certificate.
type Verifier struct {
	mesh  string
	roots *x509.CertPool

	mu      sync.Mutex // guards the fields below
	signers map[[sha256.Size]byte]*signer
	revoked map[string]time.Time // cluster -> removal time
}

type signer struct {
	cluster string
	// trustDomain is the only trust domain the cluster may publish a bundle
	// for: the credential's DNS SAN, set by the hub at join.
	trustDomain string
	key         *ecdsa.PublicKey
	notBefore   time.Time
	notAfter    time.Time
	der         []byte // interned copy, shared by every record it signed
	err         error
}

// NewVerifier returns a verifier for the mesh's trust domain with the given
// CA certificates as roots.
func NewVerifier(mesh string, roots []*x509.Certificate) *Verifier {
	pool := x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	return &Verifier{mesh: mesh, roots: pool, signers: make(map[[sha256.Size]byte]*signer), revoked: make(map[string]time.Time)}
}

// Verify checks sr and returns its decoded record. On success sr.Signer is
// replaced by an interned copy, so that stored records share one certificate.
func (v *Verifier) Verify(sr *registrypb.SignedRecord) (*Record, error) {
	if len(sr.GetRecord()) > MaxRecordBytes {
		return nil, fmt.Errorf("%w: %d bytes; the limit is %d bytes", ErrTooLarge, len(sr.GetRecord()), MaxRecordBytes)
	}
	sg := v.signer(sr.GetSigner())
	if sg.err != nil {
		return nil, sg.err
	}
	if v.revokedSigner(sg) {
		return nil, fmt.Errorf("%w: cluster %q was removed from the federation; its old credential is refused", ErrRevoked, sg.cluster)
	}
	digest := sha256.Sum256(sr.GetRecord())
	if !ecdsa.VerifyASN1(sg.key, digest[:], sr.GetSignature()) {
		return nil, fmt.Errorf("%w: signature by cluster %q is invalid", ErrBadSignature, sg.cluster)
	}
	rec := new(Record)
	if err := proto.Unmarshal(sr.GetRecord(), rec); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if rec.GetCluster() != sg.cluster {
		return nil, fmt.Errorf("%w: record for cluster %q signed by cluster %q", ErrWrongOwner, rec.GetCluster(), sg.cluster)
	}
	signed := time.Unix(0, rec.GetSignedAt())
	if signed.Before(sg.notBefore.Add(-ClockSkew)) || signed.After(sg.notAfter.Add(ClockSkew)) {
		return nil, fmt.Errorf("%w: record of %q signed at %s, outside its credential's validity", ErrBadSignature, sg.cluster, signed.UTC().Format(time.RFC3339))
	}
	if err := validateRecord(rec); err != nil {
		return nil, err
	}
	if info := rec.GetInfo(); info != nil {
		if err := checkInfo(sg, info); err != nil {
			return nil, err
		}
	}
	sr.Signer = sg.der
	return rec, nil
}

// Revoke refuses, from now on, records of cluster signed by credentials
// issued at or before at (a removal). It reports whether this changed
// anything.
func (v *Verifier) Revoke(cluster string, at time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if old, ok := v.revoked[cluster]; ok && !at.After(old) {
		return false
	}
	v.revoked[cluster] = at
	return true
}

// Revoked reports whether a stored record's signer has been revoked.
func (v *Verifier) Revoked(sr *registrypb.SignedRecord) bool {
	sg := v.signer(sr.GetSigner())
	return sg.err == nil && v.revokedSigner(sg)
}

func (v *Verifier) revokedSigner(sg *signer) bool {
	return v.revokedAt(sg.cluster, sg.notBefore)
}

// RevokedCredential reports whether a cluster credential was issued before
// its cluster's removal.
func (v *Verifier) RevokedCredential(cluster string, cert *x509.Certificate) bool {
	return v.revokedAt(cluster, cert.NotBefore)
}

func (v *Verifier) revokedAt(cluster string, notBefore time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	at, ok := v.revoked[cluster]
	// Credentials are backdated: their issuance is NotBefore + Backdate.
	return ok && !notBefore.Add(trust.Backdate).After(at)
}

func (v *Verifier) signer(der []byte) *signer {
	sum := sha256.Sum256(der)
	v.mu.Lock()
	defer v.mu.Unlock()
	if sg, ok := v.signers[sum]; ok {
		return sg
	}
	sg := v.parseSigner(der)
	if len(v.signers) > 4096 { // bound the cache against a flood of junk
		clear(v.signers)
	}
	v.signers[sum] = sg
	return sg
}

func (v *Verifier) parseSigner(der []byte) *signer {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return &signer{err: fmt.Errorf("%w: signer certificate: %v", ErrBadSignature, err)}
	}
	// The chain is checked at issuance time: a record stays valid after its
	// signer's credential was rotated.
	_, err = cert.Verify(x509.VerifyOptions{
		Roots:       v.roots,
		CurrentTime: cert.NotBefore.Add(time.Second),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return &signer{err: fmt.Errorf("%w: signer is not issued by the mesh CA: %v", ErrBadSignature, err)}
	}
	cluster, err := ClusterFromCert(v.mesh, cert)
	if err != nil {
		return &signer{err: fmt.Errorf("%w: %v", ErrBadSignature, err)}
	}
	key, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return &signer{err: fmt.Errorf("%w: signer key is %T, want ECDSA", ErrBadSignature, cert.PublicKey)}
	}
	td := DefaultTrustDomain(cluster, v.mesh)
	if len(cert.DNSNames) > 0 {
		td = cert.DNSNames[0]
	}
	return &signer{cluster: cluster, trustDomain: td, key: key, notBefore: cert.NotBefore, notAfter: cert.NotAfter, der: der}
}

// DefaultTrustDomain is a cluster's own trust domain unless the hub assigns
// another: <cluster>.<mesh>.
func DefaultTrustDomain(cluster, mesh string) string { return cluster + "." + mesh }

// ClusterFromCert returns the cluster named by a credential's SPIFFE ID,
// spiffe://<mesh>/cluster/<name>.
func ClusterFromCert(mesh string, cert *x509.Certificate) (string, error) {
	if len(cert.URIs) != 1 {
		return "", fmt.Errorf("certificate has %d URI SANs, want one SPIFFE ID", len(cert.URIs))
	}
	u := cert.URIs[0]
	prefix := ClusterIDPath
	if u.Scheme != "spiffe" || u.Host != mesh || len(u.Path) <= len(prefix) || u.Path[:len(prefix)] != prefix {
		return "", fmt.Errorf("SPIFFE ID %s is not a cluster of mesh %q", u, mesh)
	}
	name := u.Path[len(prefix):]
	if err := ValidClusterName(name); err != nil {
		return "", err
	}
	return name, nil
}

func validateRecord(rec *Record) error {
	if err := ValidClusterName(rec.GetCluster()); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if rec.GetVersion().GetIncarnation() == 0 {
		return fmt.Errorf("%w: record %q of %q has no incarnation", ErrInvalid, rec.GetKey(), rec.GetCluster())
	}
	if rec.GetDeleted() {
		return nil
	}
	switch {
	case rec.GetKey() == InfoKey && rec.GetInfo() == nil:
		return fmt.Errorf("%w: cluster info record of %q has no info", ErrInvalid, rec.GetCluster())
	case rec.GetKey() != InfoKey && rec.GetService().GetHostname() != rec.GetKey():
		return fmt.Errorf("%w: record %q of %q carries service %q", ErrInvalid, rec.GetKey(), rec.GetCluster(), rec.GetService().GetHostname())
	}
	return nil
}

// checkInfo enforces that a cluster describes only its own trust domain,
// with a well-formed bundle whose sequence the info repeats.
func checkInfo(sg *signer, info *ClusterInfo) error {
	if info.GetTrustDomain() == "" {
		if len(info.GetBundle()) > 0 {
			return fmt.Errorf("%w: cluster %q published a bundle without its trust domain", ErrInvalid, sg.cluster)
		}
		return nil
	}
	if info.GetTrustDomain() != sg.trustDomain {
		return fmt.Errorf("%w: cluster %q may publish only trust domain %q, not %q", ErrWrongOwner, sg.cluster, sg.trustDomain, info.GetTrustDomain())
	}
	if len(info.GetBundle()) == 0 {
		return nil
	}
	td, err := spiffeid.TrustDomainFromString(info.GetTrustDomain())
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	b, err := trust.ParseBundle(td, info.GetBundle())
	if err != nil {
		return fmt.Errorf("%w: cluster %q: %v", ErrInvalid, sg.cluster, err)
	}
	if seq, _ := b.SequenceNumber(); seq != info.GetBundleSequence() {
		return fmt.Errorf("%w: cluster %q: bundle sequence %d, but the record says %d", ErrInvalid, sg.cluster, seq, info.GetBundleSequence())
	}
	return nil
}
