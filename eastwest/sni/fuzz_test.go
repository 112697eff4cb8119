package sni

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/eastwest/internal/tlstest"
)

func FuzzParseClientHello(f *testing.F) {
	// Real hellos, whole and fragmented over records, with what they carry.
	real := map[string]ClientHello{}
	for _, tc := range realHellos() {
		flight := tlstest.ClientHello(f, tc.cfg)
		for _, size := range []int{0, 64, 700} {
			data := flight
			if size > 0 {
				data = tlstest.Refragment(flight, size)
			}
			real[string(data)] = tc.want
			f.Add(data)
		}
		f.Add(flight[:len(flight)/2])
	}
	for _, tc := range errorCases(f) {
		f.Add(tc.data)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseClientHello(data)
		if want, ok := real[string(data)]; ok {
			if err != nil || got.ServerName != want.ServerName || !slices.Equal(got.ALPN, want.ALPN) {
				t.Fatalf("a real hello: got %+v, %v; want %+v", got, err, want)
			}
		}
		if err != nil {
			if got.ServerName != "" || got.ALPN != nil {
				t.Fatalf("an error with a result: %+v, %v", got, err)
			}
		} else if got.ServerName != "" {
			if _, err := hostName([]byte(got.ServerName)); err != nil || got.ServerName != strings.ToLower(got.ServerName) {
				t.Fatalf("returned server name %q is not valid lower case: %v", got.ServerName, err)
			}
		}

		// The answer on a prefix is either "read more" or the final answer:
		// the gateway decides as soon as a read gives an answer.
		step := max(1, len(data)/32)
		for k := 0; k < len(data); k += step {
			pgot, perr := ParseClientHello(data[:k])
			if perr == ErrIncomplete {
				continue
			}
			if !sameResult(pgot, perr, got, err) {
				t.Fatalf("prefix of %d/%d bytes: %+v, %v; all of it: %+v, %v", k, len(data), pgot, perr, got, err)
			}
		}

		// Where crypto/tls reads the same server name, so do we.
		if err == nil {
			if name, alpn, ok := stdlibHello(data); ok {
				if got.ServerName != strings.ToLower(name) || !slices.Equal(got.ALPN, alpn) {
					t.Fatalf("crypto/tls reads %q %q, we read %+v", name, alpn, got)
				}
			}
		}
	})
}

// sameResult reports whether two parses agree: both the same hello, or
// errors of the same kind.
func sameResult(a ClientHello, aerr error, b ClientHello, berr error) bool {
	if aerr != nil || berr != nil {
		if aerr == nil || berr == nil {
			return false
		}
		for _, kind := range []error{ErrNotTLS, ErrSSLv2, ErrRecordType, ErrNotClientHello, ErrTooLarge, ErrBadLength, ErrTruncated, ErrDuplicateExtension, ErrBadServerName} {
			if errors.Is(aerr, kind) {
				return errors.Is(berr, kind)
			}
		}
		return false
	}
	return a.ServerName == b.ServerName && slices.Equal(a.ALPN, b.ALPN)
}

var errStop = errors.New("stop after the ClientHello")

// stdlibHello runs a crypto/tls server over data and returns the server
// name and ALPN it reads, if it gets as far as a parsed ClientHello.
func stdlibHello(data []byte) (name string, alpn []string, ok bool) {
	cfg := &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		name, alpn, ok = h.ServerName, h.SupportedProtos, true
		return nil, errStop
	}}
	_ = tls.Server(&replayConn{r: bytes.NewReader(data)}, cfg).Handshake()
	return name, alpn, ok
}

// replayConn reads fixed bytes and discards what is written.
type replayConn struct{ r *bytes.Reader }

func (c *replayConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *replayConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }

func FuzzParseIstioSNI(f *testing.F) {
	for _, s := range []string{
		"outbound_.9080_._.reviews.default.svc.cluster.local",
		"outbound_.9080_.v1_.reviews.default.svc.cluster.local",
		"outbound_.443_.canary_.a_.b.example.com",
		"outbound_.65535_._.a",
		"outbound_.080_._.a",
		"outbound_.80_._.",
		"outbound_.80_.V1_.a",
		"inbound_.9080_._.reviews.default.svc.cluster.local",
		"outbound|9080|v1|reviews.default.svc.cluster.local",
		"outbound_._._._._.",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseIstio(s)
		if err != nil {
			if !errors.Is(err, ErrNotIstio) && !errors.Is(err, ErrBadIstioName) {
				t.Fatalf("ParseIstio(%q): unexpected error kind %v", s, err)
			}
			if n != (Istio{}) {
				t.Fatalf("ParseIstio(%q) = %+v with error %v", s, n, err)
			}
			return
		}
		if n.String() != s {
			t.Fatalf("ParseIstio(%q).String() = %q", s, n.String())
		}
		if err := n.Validate(); err != nil {
			t.Fatalf("ParseIstio(%q) = %+v, which does not validate: %v", s, n, err)
		}
		again, err := ParseIstio(n.String())
		if err != nil || again != n {
			t.Fatalf("round trip of %+v: %+v, %v", n, again, err)
		}
		if strings.Contains(n.Subset, "_") || n.Port == 0 {
			t.Fatalf("ParseIstio(%q) = %+v", s, n)
		}
	})
}
