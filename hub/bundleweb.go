package hub

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// bundleTLS is the bundle endpoint's TLS configuration for its profile:
// the hub's SVID (spiffe://<mesh>/hub) for https_spiffe, the operator's web
// PKI certificate for https_web.
func (s *Server) bundleTLS(svid x509svid.Source) (*tls.Config, error) {
	if s.cfg.BundleProfile != ProfileHTTPSWeb {
		conf := tlsconfig.TLSServerConfig(svid)
		conf.MinVersion = tls.VersionTLS12
		return conf, nil
	}
	kp := &webKeyPair{certFile: s.cfg.BundleCertFile, keyFile: s.cfg.BundleKeyFile}
	if _, err := kp.get(nil); err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get}, nil
}

// validateBundleProfile checks the bundle endpoint's profile and files.
func (c *Config) validateBundleProfile() error {
	switch c.BundleProfile {
	case "":
		c.BundleProfile = ProfileHTTPSSPIFFE
		fallthrough
	case ProfileHTTPSSPIFFE:
		if c.BundleCertFile != "" || c.BundleKeyFile != "" {
			return errors.New("hub: a bundle endpoint certificate and key are for the https_web profile: add --bundle-profile https_web, or drop them")
		}
	case ProfileHTTPSWeb:
		if c.BundleCertFile == "" || c.BundleKeyFile == "" {
			return errors.New("hub: the https_web bundle endpoint needs a web PKI certificate and key: pass --bundle-cert and --bundle-key")
		}
	default:
		return fmt.Errorf("hub: bundle endpoint profile %q: want %s or %s", c.BundleProfile, ProfileHTTPSSPIFFE, ProfileHTTPSWeb)
	}
	return nil
}

// webKeyPair serves the operator's certificate and key files, read again
// when either file changes, so that a renewed certificate (cert-manager,
// ACME) is served without a restart.
type webKeyPair struct {
	certFile, keyFile string

	mu      sync.Mutex // guards the fields below
	cert    *tls.Certificate
	certMod time.Time
	keyMod  time.Time
}

func (kp *webKeyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cm, err := modTime(kp.certFile)
	if err != nil {
		return kp.fallback(err)
	}
	km, err := modTime(kp.keyFile)
	if err != nil {
		return kp.fallback(err)
	}
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if kp.cert != nil && cm.Equal(kp.certMod) && km.Equal(kp.keyMod) {
		return kp.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		err = fmt.Errorf("hub: bundle endpoint certificate %s and key %s: %w", kp.certFile, kp.keyFile, err)
		if kp.cert != nil {
			return kp.cert, nil // a half-written renewal: keep serving the last good pair
		}
		return nil, err
	}
	kp.cert, kp.certMod, kp.keyMod = &cert, cm, km
	return kp.cert, nil
}

// fallback keeps serving the last good pair while a file is being replaced.
func (kp *webKeyPair) fallback(err error) (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if kp.cert != nil {
		return kp.cert, nil
	}
	return nil, fmt.Errorf("hub: bundle endpoint certificate: %w", err)
}

func modTime(path string) (time.Time, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}, err
	}
	return fi.ModTime(), nil
}
