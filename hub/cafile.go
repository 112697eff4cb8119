package hub

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

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
	return ca, nil
}
