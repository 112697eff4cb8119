package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultCATTL is the lifetime of a generated root.
const DefaultCATTL = 10 * 365 * 24 * time.Hour

// Backdate is how far before its issuance a certificate becomes valid, for
// clocks that run a little behind the issuer's.
const Backdate = 5 * time.Minute

// CA issues X.509-SVIDs for one trust domain.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	Cert        *x509.Certificate
	Key         crypto.Signer
}

// NewCA generates a self-signed root for td.
func NewCA(td spiffeid.TrustDomain, now time.Time) (*CA, error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"federate"}, CommonName: td.Name() + " root"},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(DefaultCATTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("trust: create root for %s: %w", td, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{TrustDomain: td, Cert: cert, Key: key}, nil
}

// Issue signs an X.509-SVID for id with the given public key. Names, if
// given, are added as SANs: an IP address as an IP SAN, anything else as a
// DNS SAN, in order.
func (ca *CA) Issue(id spiffeid.ID, pub crypto.PublicKey, ttl time.Duration, now time.Time, names ...string) (*x509.Certificate, error) {
	if !id.MemberOf(ca.TrustDomain) {
		return nil, fmt.Errorf("trust: %s is outside trust domain %s", id, ca.TrustDomain)
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"federate"}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("trust: issue %s: %w", id, err)
	}
	return x509.ParseCertificate(der)
}

// IssueCSR checks a PKCS#10 request's signature and issues id for its key.
// Names inside the request are ignored: the caller decides the identity.
func (ca *CA) IssueCSR(csrDER []byte, id spiffeid.ID, ttl time.Duration, now time.Time, dnsNames ...string) (*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("trust: parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("trust: certificate request signature: %w", err)
	}
	if _, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok {
		return nil, fmt.Errorf("trust: certificate request key is %T; use ECDSA P-256", csr.PublicKey)
	}
	return ca.Issue(id, csr.PublicKey, ttl, now, dnsNames...)
}

// MarshalPEM encodes the CA certificate and key.
func (ca *CA) MarshalPEM() ([]byte, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...), nil
}

// ParseCA decodes what MarshalPEM wrote.
func ParseCA(td spiffeid.TrustDomain, data []byte) (*CA, error) {
	certs, key, err := parsePEM(data)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 || key == nil {
		return nil, errors.New("trust: CA file must hold one certificate and one key")
	}
	return &CA{TrustDomain: td, Cert: certs[0], Key: key}, nil
}

// Fingerprint identifies a CA by the SHA-256 of its public key, as
// "sha256:<hex>" (kubeadm's discovery hash).
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// GenerateKey returns a new ECDSA P-256 key.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewCSR returns a DER certificate request for key. Names, if given, are
// asked for as SANs (IP addresses as IP SANs); the CA decides what it
// grants.
func NewCSR(key crypto.Signer, names ...string) ([]byte, error) {
	tmpl := &x509.CertificateRequest{}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return x509.CreateCertificateRequest(rand.Reader, tmpl, key)
}

// CSRNames returns the SANs a certificate request asks for, DNS names
// first, then IP addresses as text.
func CSRNames(csrDER []byte) ([]string, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("trust: parse certificate request: %w", err)
	}
	names := slices.Clone(csr.DNSNames)
	for _, ip := range csr.IPAddresses {
		names = append(names, ip.String())
	}
	return names, nil
}

// CertificateNames returns a certificate's DNS and IP SANs, DNS names
// first, then IP addresses as text.
func CertificateNames(cert *x509.Certificate) []string {
	names := slices.Clone(cert.DNSNames)
	for _, ip := range cert.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n
}
