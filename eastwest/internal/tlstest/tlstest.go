// Package tlstest makes real TLS material for the gateway's tests: the
// ClientHello bytes crypto/tls sends, those bytes re-fragmented over
// records, and self-signed server certificates.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// ClientHello returns the first flight a crypto/tls client with cfg sends:
// one record holding its ClientHello.
func ClientHello(tb testing.TB, cfg *tls.Config) []byte {
	tb.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(client, cfg).Handshake() // fails once the pipe closes
	}()
	if err := server.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		tb.Fatal(err)
	}
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(server, hdr); err != nil {
		tb.Fatalf("read the hello's record header: %v", err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(server, body); err != nil {
		tb.Fatalf("read the hello: %v", err)
	}
	server.Close()
	client.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		tb.Fatal("the TLS client did not stop after its connection closed")
	}
	return append(hdr, body...)
}

// Refragment splits the handshake messages in the records of flight into
// records carrying at most size bytes each, as a TLS stack may do. It
// expects flight to hold handshake records only.
func Refragment(flight []byte, size int) []byte {
	var payload []byte
	version := flight[1:3]
	for len(flight) >= 5 {
		n := int(flight[3])<<8 | int(flight[4])
		payload = append(payload, flight[5:5+n]...)
		flight = flight[5+n:]
	}
	var out []byte
	for len(payload) > 0 {
		n := min(size, len(payload))
		out = append(out, 22, version[0], version[1], byte(n>>8), byte(n))
		out = append(out, payload[:n]...)
		payload = payload[n:]
	}
	return out
}

// RenameExtension returns a copy of flight, a ClientHello in one record,
// with the type of its extension from changed to to.
func RenameExtension(flight []byte, from, to uint16) []byte {
	out := append([]byte(nil), flight...)
	i := 5 + 4 + 2 + 32                       // record and handshake headers, version, random
	i += 1 + int(out[i])                      // session ID
	i += 2 + (int(out[i])<<8 | int(out[i+1])) // cipher suites
	i += 1 + int(out[i])                      // compression methods
	for i += 2; i+4 <= len(out); i += 4 + (int(out[i+2])<<8 | int(out[i+3])) {
		if int(out[i])<<8|int(out[i+1]) == int(from) {
			out[i], out[i+1] = byte(to>>8), byte(to)
			return out
		}
	}
	panic("tlstest: the hello has no such extension")
}

// Certificate returns a self-signed ECDSA P-256 server certificate for
// names, and a pool that trusts it.
func Certificate(tb testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	tb.Helper()
	cert, err := SelfSigned(names...)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	return cert, pool
}

// SelfSigned is Certificate for commands: a self-signed ECDSA P-256
// server certificate for names.
func SelfSigned(names ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
