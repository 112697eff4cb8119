package agent

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	"github.com/federate/federate/trust"
)

// The files 'federate-agent svid' keeps for a proxyless gRPC application,
// which its xDS bootstrap ('federate xds bootstrap') names.
const (
	// SVIDPEMFile holds the SVID chain, leaf first, then its key: one file
	// renamed into place, so a reader never pairs a key with another
	// SVID's chain. grpc-go's file_watcher reads it as both its
	// certificate_file and its private_key_file.
	SVIDPEMFile = "svid.pem"
	// BundleFile holds the roots of every federated trust domain: what the
	// application's peers' SVIDs verify against.
	BundleFile = "bundle.pem"
	// ControlPlaneCAFile holds the roots that verify the control plane's
	// certificate (the mesh CA).
	ControlPlaneCAFile = "controlplane-ca.pem"
	// DefaultSVIDDir is where they go unless told otherwise.
	DefaultSVIDDir = "/var/run/federate/svid"
)

// SVIDFiles writes a proxyless application's credential files in Dir,
// each atomically (a temporary file renamed into place) and only when its
// content changes, so file watchers see complete files.
type SVIDFiles struct {
	Dir string
}

// WriteSVID writes the SVID and its key (mode 0600).
func (f SVIDFiles) WriteSVID(cred *trust.Credential) error {
	data, err := cred.MarshalPEM()
	if err != nil {
		return err
	}
	return f.write(SVIDPEMFile, data, 0o600)
}

// WriteBundle writes the federated roots (mode 0644).
func (f SVIDFiles) WriteBundle(roots []*x509.Certificate) error {
	if len(roots) == 0 {
		return fmt.Errorf("agent: no roots to write to %s", filepath.Join(f.Dir, BundleFile))
	}
	return f.write(BundleFile, trust.EncodeCertificates(roots...), 0o644)
}

// WriteControlPlaneCA writes the roots that verify the control plane.
func (f SVIDFiles) WriteControlPlaneCA(roots []*x509.Certificate) error {
	if len(roots) == 0 {
		return fmt.Errorf("agent: no roots to write to %s", filepath.Join(f.Dir, ControlPlaneCAFile))
	}
	return f.write(ControlPlaneCAFile, trust.EncodeCertificates(roots...), 0o644)
}

func (f SVIDFiles) write(name string, data []byte, mode os.FileMode) error {
	path := filepath.Join(f.Dir, name)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := trust.WriteFileAtomic(path, data, mode); err != nil {
		return fmt.Errorf("agent: write %s: %w", path, err)
	}
	return nil
}
