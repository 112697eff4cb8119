package trust_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/trust"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var shopTD = spiffeid.RequireTrustDomainFromString("shop")

func newCA(t *testing.T, td spiffeid.TrustDomain) *trust.CA {
	t.Helper()
	ca, err := trust.NewCA(td, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func csrFor(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	der, err := trust.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// tamperedCSR is a well-formed request whose signature does not verify.
func tamperedCSR(t *testing.T) []byte {
	t.Helper()
	key, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der := csrFor(t, key)
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(der, csr.Signature)
	if at < 0 {
		t.Fatal("signature not found in the request")
	}
	der = bytes.Clone(der)
	der[at+10] ^= 0x55 // inside r of the ECDSA signature
	if _, err := x509.ParseCertificateRequest(der); err != nil {
		t.Fatalf("the tampered request no longer parses, so it would not test the signature check: %v", err)
	}
	return der
}

func TestIssueCSR(t *testing.T) {
	ca := newCA(t, shopTD)
	id := spiffeid.RequireFromPath(shopTD, "/cluster/east")
	ecKey, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		csr     []byte
		wantErr string
	}{
		{name: "ECDSA request", csr: csrFor(t, ecKey)},
		{name: "bad signature", csr: tamperedCSR(t), wantErr: "signature"},
		{name: "RSA key", csr: csrFor(t, rsaKey), wantErr: "ECDSA"},
		{name: "Ed25519 key", csr: csrFor(t, edKey), wantErr: "ECDSA"},
		{name: "not a request", csr: []byte("certainly not DER"), wantErr: "parse"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := ca.IssueCSR(tc.csr, id, time.Hour, time.Now())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("IssueCSR: %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("IssueCSR: %v", err)
			}
			if len(cert.URIs) != 1 || cert.URIs[0].String() != id.String() {
				t.Fatalf("issued %v, want %s", cert.URIs, id)
			}
			pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
			if !ok || !pub.Equal(ecKey.Public()) {
				t.Fatal("issued certificate is not for the requested key")
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca.Cert)
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Fatalf("issued certificate does not chain to the CA: %v", err)
			}
		})
	}
}

func TestIssueOutsideTrustDomain(t *testing.T) {
	ca := newCA(t, shopTD)
	key, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"spiffe://other/cluster/east", "spiffe://shop.other/cluster/east", "spiffe://other.shop/cluster/east", "spiffe://shopping/hub"} {
		_, err := ca.Issue(spiffeid.RequireFromString(id), key.Public(), time.Hour, time.Now())
		if err == nil || !strings.Contains(err.Error(), "outside trust domain") {
			t.Errorf("Issue(%s): %v, want it refused as outside trust domain shop", id, err)
		}
	}
	if _, err := ca.Issue(spiffeid.RequireFromString("spiffe://shop/cluster/east"), key.Public(), time.Hour, time.Now()); err != nil {
		t.Fatalf("Issue inside the trust domain: %v", err)
	}
}

// serveTLS accepts TLS connections on loopback presenting chain, and
// completes each handshake it can.
func serveTLS(t *testing.T, chain []*x509.Certificate, key crypto.Signer) string {
	t.Helper()
	cert := tls.Certificate{PrivateKey: key}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		lis.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = conn.(*tls.Conn).HandshakeContext(ctx)
			})
		}
	})
	return lis.Addr().String()
}

// leafFor issues a server credential for path from ca.
func leafFor(t *testing.T, ca *trust.CA, path string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(spiffeid.RequireFromPath(ca.TrustDomain, path), key.Public(), time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return leaf, key
}

func TestPinnedTLS(t *testing.T) {
	hubCA := newCA(t, shopTD)
	otherCA := newCA(t, shopTD)
	pin := trust.Fingerprint(hubCA.Cert)
	hubLeaf, hubKey := leafFor(t, hubCA, "/hub")
	adminLeaf, adminKey := leafFor(t, hubCA, "/admin")
	// An impostor holding a key of its own presents the genuine CA
	// certificate, which is public, above a leaf its own CA signed.
	fakeLeaf, fakeKey := leafFor(t, otherCA, "/hub")

	tests := []struct {
		name    string
		chain   []*x509.Certificate
		key     crypto.Signer
		pin     string
		wantErr string
	}{
		{name: "the pinned hub", chain: []*x509.Certificate{hubLeaf, hubCA.Cert}, key: hubKey, pin: pin},
		{name: "a hub of another CA", chain: []*x509.Certificate{fakeLeaf, otherCA.Cert}, key: fakeKey, pin: pin, wantErr: "fingerprint"},
		{name: "pin of another CA", chain: []*x509.Certificate{hubLeaf, hubCA.Cert}, key: hubKey, pin: trust.Fingerprint(otherCA.Cert), wantErr: "fingerprint"},
		{name: "impostor behind the genuine CA certificate", chain: []*x509.Certificate{fakeLeaf, hubCA.Cert}, key: fakeKey, pin: pin, wantErr: "does not verify"},
		{name: "no CA certificate sent", chain: []*x509.Certificate{hubLeaf}, key: hubKey, pin: pin, wantErr: "no CA certificate"},
		{name: "not the hub", chain: []*x509.Certificate{adminLeaf, hubCA.Cert}, key: adminKey, pin: pin, wantErr: "want path /hub"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveTLS(t, tc.chain, tc.key)
			var got *x509.Certificate
			d := tls.Dialer{Config: trust.PinnedTLS(tc.pin, "/hub", func(c *x509.Certificate) { got = c })}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			conn, err := d.DialContext(ctx, "tcp", addr)
			if tc.wantErr != "" {
				if err == nil {
					conn.Close()
					t.Fatalf("handshake succeeded, want an error containing %q", tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("handshake: %v, want an error containing %q", err, tc.wantErr)
				}
				if got != nil {
					t.Fatal("the CA of a refused server was reported as pinned")
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake with the pinned hub: %v", err)
			}
			conn.Close()
			if got == nil || !got.Equal(hubCA.Cert) {
				t.Fatal("the pinned CA was not reported")
			}
		})
	}
}
