package fedtest

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/federate/federate/trust"
)

// WebPKI is a private web PKI, as an operator's company CA: a root and
// server certificates for DNS names and IP addresses, no SPIFFE IDs.
type WebPKI struct {
	t      testing.TB
	Root   *x509.Certificate
	key    any
	CAFile string // the root, PEM
}

// NewWebPKI creates a root and writes it to dir/web-ca.pem.
func NewWebPKI(t testing.TB, dir string) *WebPKI {
	t.Helper()
	key, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test web root"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	w := &WebPKI{t: t, Root: root, key: key, CAFile: filepath.Join(dir, "web-ca.pem")}
	writePEM(t, w.CAFile, "CERTIFICATE", der)
	return w
}

// Pool is the root as a certificate pool.
func (w *WebPKI) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(w.Root)
	return p
}

// Issue writes a server certificate for names (DNS names or IPs) and its
// key to certFile and keyFile, replacing them by rename as a renewal would.
func (w *WebPKI) Issue(certFile, keyFile string, names ...string) *x509.Certificate {
	w.t.Helper()
	key, err := trust.GenerateKey()
	if err != nil {
		w.t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		w.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, w.Root, key.Public(), w.key)
	if err != nil {
		w.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		w.t.Fatal(err)
	}
	writePEM(w.t, keyFile, "PRIVATE KEY", keyDER)
	writePEM(w.t, certFile, "CERTIFICATE", der)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		w.t.Fatal(err)
	}
	return cert
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
