package trust

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Credential is an X.509-SVID that can be replaced while in use: TLS
// configurations built on it pick up a renewed certificate at once.
type Credential struct {
	mu   sync.RWMutex // guards svid
	svid *x509svid.SVID
}

// NewCredential wraps a certificate chain (leaf first) and its key.
func NewCredential(certs []*x509.Certificate, key crypto.Signer) (*Credential, error) {
	c := new(Credential)
	if err := c.Set(certs, key); err != nil {
		return nil, err
	}
	return c, nil
}

// Set replaces the certificate chain and key.
func (c *Credential) Set(certs []*x509.Certificate, key crypto.Signer) error {
	if len(certs) == 0 || key == nil {
		return errors.New("trust: credential needs a certificate and a key")
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return fmt.Errorf("trust: credential is not an X.509-SVID: %w", err)
	}
	c.mu.Lock()
	c.svid = &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
	c.mu.Unlock()
	return nil
}

// GetX509SVID implements x509svid.Source.
func (c *Credential) GetX509SVID() (*x509svid.SVID, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.svid, nil
}

// ID returns the credential's SPIFFE ID.
func (c *Credential) ID() spiffeid.ID {
	s, _ := c.GetX509SVID()
	return s.ID
}

// Leaf returns the credential's certificate.
func (c *Credential) Leaf() *x509.Certificate {
	s, _ := c.GetX509SVID()
	return s.Certificates[0]
}

// Key returns the credential's private key.
func (c *Credential) Key() crypto.Signer {
	s, _ := c.GetX509SVID()
	return s.PrivateKey
}

// Expiry returns when the credential's certificate expires.
func (c *Credential) Expiry() time.Time { return c.Leaf().NotAfter }

// MarshalPEM encodes the chain and key, certificates first.
func (c *Credential) MarshalPEM() ([]byte, error) {
	s, _ := c.GetX509SVID()
	var out []byte
	for _, cert := range s.Certificates {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(s.PrivateKey)
	if err != nil {
		return nil, err
	}
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...), nil
}

// Save writes the credential to path atomically with mode 0600.
func (c *Credential) Save(path string) error {
	data, err := c.MarshalPEM()
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, data, 0o600)
}

// LoadCredential reads a file written by Save.
func LoadCredential(path string) (*Credential, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trust: read credential: %w", err)
	}
	certs, key, err := parsePEM(data)
	if err != nil {
		return nil, fmt.Errorf("trust: credential %s: %w", path, err)
	}
	if len(certs) == 0 || key == nil {
		return nil, fmt.Errorf("trust: %s is not a credential: want a certificate chain and its private key in one PEM file", path)
	}
	c, err := NewCredential(certs, key)
	if err != nil {
		return nil, fmt.Errorf("trust: credential %s: %w", path, err)
	}
	return c, nil
}

// LoadCertificates reads PEM certificates from path.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("trust: read certificates: %w", err)
	}
	certs, _, err := parsePEM(data)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("trust: %s holds no valid PEM certificate: %v", path, err)
	}
	return certs, nil
}

// EncodeCertificates returns certificates as PEM.
func EncodeCertificates(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// WriteFileAtomic writes data to a temporary file and renames it into place.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func parsePEM(data []byte) ([]*x509.Certificate, crypto.Signer, error) {
	var certs []*x509.Certificate
	var key crypto.Signer
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, err
			}
			certs = append(certs, c)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, nil, err
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, nil, fmt.Errorf("key of type %T cannot sign", k)
			}
			key = s
		}
	}
	return certs, key, nil
}

// RenewAt returns when a certificate should be renewed: half way through
// its lifetime, counted from issuance (NotBefore is backdated by Backdate).
func RenewAt(cert *x509.Certificate) time.Time {
	issued := cert.NotBefore.Add(Backdate)
	if !issued.Before(cert.NotAfter) {
		issued = cert.NotBefore
	}
	return issued.Add(cert.NotAfter.Sub(issued) / 2)
}

// ParseCertificates decodes a DER chain, leaf first, as the federation API
// carries it.
func ParseCertificates(ders [][]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("trust: certificate %d of the chain: %w", len(out), err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("trust: empty certificate chain")
	}
	return out, nil
}
