package hub

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/federate/federate/membership"
	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// CreateCAFile writes a new mesh CA, certificate and key in PEM, to path
// for replicas to share; it never overwrites a file. It returns the CA's
// fingerprint.
func CreateCAFile(mesh, path string, now time.Time) (string, error) {
	td, err := spiffeid.TrustDomainFromString(mesh)
	if err != nil {
		return "", fmt.Errorf("hub: mesh name %q is not a valid trust domain: %w", mesh, err)
	}
	ca, err := trust.NewCA(td, now)
	if err != nil {
		return "", err
	}
	data, err := ca.MarshalPEM()
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("hub: CA file %s exists; it is kept: every replica must mount that same file", path)
	}
	if err != nil {
		return "", fmt.Errorf("hub: create CA file: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return "", fmt.Errorf("hub: write CA file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("hub: write CA file %s: %w", path, err)
	}
	return trust.Fingerprint(ca.Cert), nil
}

// loadCAFile reads the CA replicas share.
func loadCAFile(td spiffeid.TrustDomain, path string) (*trust.CA, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("hub: CA file %s does not exist; create it once with 'federate hub create-ca --mesh %s --out %s' and mount it in every replica", path, td.Name(), path)
	}
	if err != nil {
		return nil, fmt.Errorf("hub: CA file: %w", err)
	}
	ca, err := trust.ParseCA(td, data)
	if err != nil {
		return nil, fmt.Errorf("hub: CA file %s: %w", path, err)
	}
	if other := otherMesh(ca, td); other != "" {
		return nil, fmt.Errorf("hub: CA file %s is the CA of %s, not of mesh %q: pass that mesh's CA file, or --mesh it was created for", path, other, td.Name())
	}
	return ca, nil
}

// otherMesh returns the mesh ID a CA names when it is not td's: a CA the
// hub creates names its mesh, and one that names another belongs to
// another federation. It returns "" for td's CA and for one that names
// none.
func otherMesh(ca *trust.CA, td spiffeid.TrustDomain) string {
	uris := ca.Cert.URIs
	if len(uris) == 0 || slices.ContainsFunc(uris, func(u *url.URL) bool { return u.String() == td.IDString() }) {
		return ""
	}
	return uris[0].String()
}

// WriteAdminCredential issues an admin credential valid for ttl from the
// shared CA file, for an operator of replicas on etcd, and writes it to
// dir/admin.pem with the mesh CA in dir/ca.pem. It returns the
// credential's expiry.
func WriteAdminCredential(mesh, caFile, dir string, ttl time.Duration, now time.Time) (time.Time, error) {
	td, err := spiffeid.TrustDomainFromString(mesh)
	if err != nil {
		return time.Time{}, fmt.Errorf("hub: mesh name %q is not a valid trust domain: %w", mesh, err)
	}
	ca, err := loadCAFile(td, caFile)
	if err != nil {
		return time.Time{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return time.Time{}, fmt.Errorf("hub: %w", err)
	}
	if err := writeCAPEM(ca, dir); err != nil {
		return time.Time{}, err
	}
	admin, err := issueAdmin(ca, dir, ttl, now)
	if err != nil {
		return time.Time{}, err
	}
	return admin.Expiry(), nil
}

// writeCAPEM writes the CA's certificate to dir/ca.pem for the CLI, only
// when it changed: a hub on a full disk still starts.
func writeCAPEM(ca *trust.CA, dir string) error {
	caPEM, caPath := trust.EncodeCertificates(ca.Cert), filepath.Join(dir, membership.CAFile)
	if cur, err := os.ReadFile(caPath); err == nil && bytes.Equal(cur, caPEM) {
		return nil
	}
	return trust.WriteFileAtomic(caPath, caPEM, 0o644)
}

// issueAdmin writes a new admin credential from ca, valid for ttl, to
// dir/admin.pem.
func issueAdmin(ca *trust.CA, dir string, ttl time.Duration, now time.Time) (*trust.Credential, error) {
	admin, err := issueFrom(ca, membership.AdminID(ca.TrustDomain), ttl, now)
	if err != nil {
		return nil, err
	}
	return admin, admin.Save(filepath.Join(dir, AdminCredFile))
}

// issueFrom issues a credential from ca with a fresh key; the chain
// includes the CA so that joining clusters can pin it.
func issueFrom(ca *trust.CA, id spiffeid.ID, ttl time.Duration, now time.Time) (*trust.Credential, error) {
	key, err := trust.GenerateKey()
	if err != nil {
		return nil, err
	}
	leaf, err := ca.Issue(id, key.Public(), ttl, now)
	if err != nil {
		return nil, err
	}
	return trust.NewCredential([]*x509.Certificate{leaf, ca.Cert}, key)
}
