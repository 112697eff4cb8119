package sni

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/federate/federate/eastwest/internal/tlstest"
)

const reviews = "outbound_.9080_._.reviews.default.svc.cluster.local"

// istioALPN is what Istio sidecars offer on mTLS connections.
var istioALPN = []string{"istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"}

// realHello is a ClientHello that crypto/tls sends, and what parsing it must give.
type realHello struct {
	name    string
	cfg     *tls.Config
	want    ClientHello
	minSize int // the wire size is at least this
}

func realHellos() []realHello {
	many := slices.Clone(istioALPN)
	for i := range 12 {
		many = append(many, fmt.Sprintf("padding-protocol-%02d-%s", i, strings.Repeat("x", 20)))
	}
	return []realHello{
		{
			name: "istio",
			cfg:  &tls.Config{ServerName: reviews, NextProtos: istioALPN},
			want: ClientHello{ServerName: reviews, ALPN: istioALPN},
		},
		{
			name: "subset",
			cfg:  &tls.Config{ServerName: "outbound_.9080_.v1_.reviews.default.svc.cluster.local"},
			want: ClientHello{ServerName: "outbound_.9080_.v1_.reviews.default.svc.cluster.local"},
		},
		{
			name: "upper case",
			cfg:  &tls.Config{ServerName: "Ratings.Default.SVC.cluster.local"},
			want: ClientHello{ServerName: "ratings.default.svc.cluster.local"},
		},
		{
			name: "no SNI",
			cfg:  &tls.Config{InsecureSkipVerify: true},
			want: ClientHello{},
		},
		{
			name: "TLS 1.2 only",
			cfg:  &tls.Config{ServerName: "hub.federate.internal", MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2"}},
			want: ClientHello{ServerName: "hub.federate.internal", ALPN: []string{"h2"}},
		},
		{
			name: "classical key share",
			cfg:  &tls.Config{ServerName: reviews, CurvePreferences: []tls.CurveID{tls.X25519}},
			want: ClientHello{ServerName: reviews},
		},
		{
			name:    "X25519MLKEM768",
			cfg:     &tls.Config{ServerName: reviews, CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519}, NextProtos: istioALPN},
			want:    ClientHello{ServerName: reviews, ALPN: istioALPN},
			minSize: 1400,
		},
		{
			name:    "post-quantum 2.4 kB",
			cfg:     &tls.Config{ServerName: reviews, CurvePreferences: []tls.CurveID{tls.SecP384r1MLKEM1024}, NextProtos: many},
			want:    ClientHello{ServerName: reviews, ALPN: many},
			minSize: 2300,
		},
	}
}

func TestParseClientHelloReal(t *testing.T) {
	for _, tc := range realHellos() {
		flight := tlstest.ClientHello(t, tc.cfg)
		t.Run(tc.name, func(t *testing.T) {
			t.Logf("hello: %d bytes", len(flight))
			if len(flight) < tc.minSize {
				t.Fatalf("hello is %d bytes, want at least %d", len(flight), tc.minSize)
			}
			for _, size := range []int{0, 1, 7, 100, 1000} {
				data := flight
				if size > 0 {
					data = tlstest.Refragment(flight, size)
				}
				got, err := ParseClientHello(data)
				if err != nil {
					t.Fatalf("records of %d bytes: %v", size, err)
				}
				if got.ServerName != tc.want.ServerName || !slices.Equal(got.ALPN, tc.want.ALPN) {
					t.Fatalf("records of %d bytes: got %+v, want %+v", size, got, tc.want)
				}
				// More bytes after the hello change nothing.
				if again, err := ParseClientHello(append(slices.Clip(data), 0x14, 3, 3, 0, 1, 1)); err != nil || again.ServerName != got.ServerName {
					t.Fatalf("with a record after the hello: %+v, %v", again, err)
				}
				// Every prefix is incomplete: the caller must read on.
				step := 1
				if size == 1 {
					step = 97 // 1-byte records make the wire six times longer
				}
				for k := 0; k < len(data); k += step {
					if _, err := ParseClientHello(data[:k]); err != ErrIncomplete {
						t.Fatalf("records of %d bytes, prefix of %d/%d: %v, want ErrIncomplete", size, k, len(data), err)
					}
				}
			}
		})
	}
}

// hello builds ClientHello bodies field by field, so that tests can break
// any one of them.
type hello struct {
	sessionID    []byte
	suites       []byte
	compression  []byte
	noExtensions bool
	extensions   []byte // the extensions block without its length
	extLenDelta  int    // added to the extensions block length
	trailing     []byte // after the extensions block
}

func defaultHello() hello {
	return hello{
		sessionID:   bytes.Repeat([]byte{7}, 32),
		suites:      []byte{0x13, 0x01, 0x13, 0x02},
		compression: []byte{0},
		extensions:  ext(extensionServerName, serverNameList(host(reviews))),
	}
}

func (h hello) body() []byte {
	b := []byte{3, 3}
	b = append(b, bytes.Repeat([]byte{1}, 32)...)
	b = append(b, byte(len(h.sessionID)))
	b = append(b, h.sessionID...)
	b = append(b, byte(len(h.suites)>>8), byte(len(h.suites)))
	b = append(b, h.suites...)
	b = append(b, byte(len(h.compression)))
	b = append(b, h.compression...)
	if !h.noExtensions {
		n := len(h.extensions) + h.extLenDelta
		b = append(b, byte(n>>8), byte(n))
		b = append(b, h.extensions...)
	}
	return append(b, h.trailing...)
}

func (h hello) record() []byte { return handshakeRecord(handshakeTypeClientHello, h.body()) }

func handshakeRecord(typ byte, body []byte) []byte {
	msg := append([]byte{typ, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{recordTypeHandshake, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

func ext(typ uint16, data []byte) []byte {
	return append([]byte{byte(typ >> 8), byte(typ), byte(len(data) >> 8), byte(len(data))}, data...)
}

func host(name string) []byte { return entry(nameTypeHostName, name) }

func entry(typ byte, name string) []byte {
	return append([]byte{typ, byte(len(name) >> 8), byte(len(name))}, name...)
}

func serverNameList(entries ...[]byte) []byte {
	list := slices.Concat(entries...)
	return append([]byte{byte(len(list) >> 8), byte(len(list))}, list...)
}

func alpnList(protos ...string) []byte {
	var list []byte
	for _, p := range protos {
		list = append(list, byte(len(p)))
		list = append(list, p...)
	}
	return append([]byte{byte(len(list) >> 8), byte(len(list))}, list...)
}

func with(f func(*hello)) []byte {
	h := defaultHello()
	f(&h)
	return h.record()
}

// errorCases are inputs each refused with a distinct error.
func errorCases(t testing.TB) []struct {
	name    string
	data    []byte
	wantErr error
} {
	real := tlstest.ClientHello(t, &tls.Config{ServerName: reviews})
	split := tlstest.Refragment(real, 100)
	alertInside := slices.Clone(split)
	alertInside[105] = 21 // the second record becomes an alert
	manyExts := func(dup bool) []byte {
		var b []byte
		for i := range 40 {
			b = append(b, ext(uint16(1000+i), nil)...)
		}
		if dup {
			b = append(b, ext(1039, nil)...)
		}
		return b
	}
	big := handshakeRecord(handshakeTypeClientHello, make([]byte, 16000))
	return []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{"empty", nil, ErrIncomplete},
		{"one byte", real[:1], ErrIncomplete},
		{"HTTP", []byte("GET / HTTP/1.1\r\n"), ErrNotTLS},
		{"SSH", []byte("SSH-2.0-OpenSSH_9.2\r\n"), ErrNotTLS},
		{"zero byte", []byte{0}, ErrNotTLS},
		{"SSLv2 hello", []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, ErrSSLv2},
		{"application data first", []byte{23, 3, 3, 0, 5, 1, 2, 3, 4, 5}, ErrRecordType},
		{"alert first", []byte{21, 3, 3, 0, 2, 2, 40}, ErrRecordType},
		{"alert inside the hello", alertInside, ErrRecordType},
		{"record version", []byte{22, 2, 0, 0, 5}, ErrNotTLS},
		{"empty record", []byte{22, 3, 1, 0, 0}, ErrBadLength},
		{"record over 16 KiB", []byte{22, 3, 1, 0x40, 0x01}, ErrBadLength},
		{"server hello", handshakeRecord(2, defaultHello().body()), ErrNotClientHello},
		{"server hello split", tlstest.Refragment(handshakeRecord(2, defaultHello().body()), 1), ErrNotClientHello},
		{"declared too large", []byte{22, 3, 1, 0, 4, 1, 0, 0x50, 0}, ErrTooLarge},
		{"too large over records", tlstest.Refragment(big, 1)[:MaxHelloSize], ErrTooLarge},
		{"too large, more bytes", tlstest.Refragment(big, 1), ErrTooLarge},
		{"body cut in random", handshakeRecord(1, make([]byte, 20)), ErrTruncated},
		{"session ID of 33", with(func(h *hello) { h.sessionID = make([]byte, 33) }), ErrBadLength},
		{"no cipher suites", with(func(h *hello) { h.suites = nil }), ErrBadLength},
		{"odd cipher suites", with(func(h *hello) { h.suites = []byte{0x13, 0x01, 0x13} }), ErrBadLength},
		{"no compression", with(func(h *hello) { h.compression = nil }), ErrBadLength},
		{"extensions block truncated", with(func(h *hello) { h.extLenDelta = 3 }), ErrTruncated},
		{"extension truncated", with(func(h *hello) {
			h.extensions = append(h.extensions, 0, 16, 0, 9, 0, 3)
		}), ErrTruncated},
		{"extension type truncated", with(func(h *hello) { h.extensions = append(h.extensions, 0) }), ErrTruncated},
		{"bytes after the extensions", with(func(h *hello) { h.trailing = []byte{0} }), ErrBadLength},
		{"duplicate extension", with(func(h *hello) {
			h.extensions = append(h.extensions, ext(extensionServerName, serverNameList(host("a.b")))...)
		}), ErrDuplicateExtension},
		{"duplicate unknown extension", with(func(h *hello) {
			h.extensions = append(h.extensions, ext(0xfe0d, nil)...)
			h.extensions = append(h.extensions, ext(0xfe0d, nil)...)
		}), ErrDuplicateExtension},
		{"duplicate after 40 extensions", with(func(h *hello) { h.extensions = manyExts(true) }), ErrDuplicateExtension},
		{"server_name list longer", with(func(h *hello) { h.extensions = ext(0, append(serverNameList(host("a.b")), 0)) }), ErrBadLength},
		{"server_name list empty", with(func(h *hello) { h.extensions = ext(0, []byte{0, 0}) }), ErrBadLength},
		{"server_name extension empty", with(func(h *hello) { h.extensions = ext(0, nil) }), ErrBadLength},
		{"host name empty", with(func(h *hello) { h.extensions = ext(0, serverNameList(host(""))) }), ErrBadLength},
		{"host name past the list", with(func(h *hello) { h.extensions = ext(0, []byte{0, 4, 0, 0, 9, 'a'}) }), ErrBadLength},
		{"two host names", with(func(h *hello) { h.extensions = ext(0, serverNameList(host("a.b"), host("c.d"))) }), ErrBadServerName},
		{"trailing dot", with(func(h *hello) { h.extensions = ext(0, serverNameList(host("a.b."))) }), ErrBadServerName},
		{"empty label", with(func(h *hello) { h.extensions = ext(0, serverNameList(host("a..b"))) }), ErrBadServerName},
		{"NUL in name", with(func(h *hello) { h.extensions = ext(0, serverNameList(host("a\x00b"))) }), ErrBadServerName},
		{"IPv6 literal", with(func(h *hello) { h.extensions = ext(0, serverNameList(host("::1"))) }), ErrBadServerName},
		{"name of 256 bytes", with(func(h *hello) { h.extensions = ext(0, serverNameList(host(strings.Repeat("a", 256)))) }), ErrBadServerName},
		{"ALPN empty protocol", with(func(h *hello) { h.extensions = ext(extensionALPN, alpnList("h2", "")) }), ErrBadLength},
		{"ALPN list short", with(func(h *hello) { h.extensions = ext(extensionALPN, []byte{0, 9, 2, 'h', '2'}) }), ErrBadLength},
		{"ALPN protocol past the list", with(func(h *hello) { h.extensions = ext(extensionALPN, []byte{0, 3, 5, 'h', '2'}) }), ErrBadLength},
	}
}

func TestParseClientHelloErrors(t *testing.T) {
	for _, tc := range errorCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseClientHello(tc.data)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %+v, %v; want %v", got, err, tc.wantErr)
			}
			// Each error names one cause only.
			for _, other := range []error{ErrIncomplete, ErrNotTLS, ErrSSLv2, ErrRecordType, ErrNotClientHello, ErrTooLarge, ErrBadLength, ErrTruncated, ErrDuplicateExtension, ErrBadServerName} {
				if other != tc.wantErr && errors.Is(err, other) {
					t.Errorf("%v is also %v", err, other)
				}
			}
		})
	}
}

func TestParseClientHelloAccepts(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want ClientHello
	}{
		{"no extensions", with(func(h *hello) { h.noExtensions = true }), ClientHello{}},
		{"empty extensions", with(func(h *hello) { h.extensions = nil }), ClientHello{}},
		{"empty session ID", with(func(h *hello) { h.sessionID = nil }), ClientHello{ServerName: reviews}},
		{"unknown name type skipped", with(func(h *hello) { h.extensions = ext(0, serverNameList(entry(9, "opaque"), host("a.b"))) }), ClientHello{ServerName: "a.b"}},
		{"only an unknown name type", with(func(h *hello) { h.extensions = ext(0, serverNameList(entry(9, "opaque"))) }), ClientHello{}},
		{"40 extensions", with(func(h *hello) {
			for i := range 40 {
				h.extensions = append(h.extensions, ext(uint16(1000+i), nil)...)
			}
		}), ClientHello{ServerName: reviews}},
		{"name of 255 bytes", with(func(h *hello) { h.extensions = ext(0, serverNameList(host(strings.Repeat("a", 255)))) }), ClientHello{ServerName: strings.Repeat("a", 255)}},
		{"ALPN", with(func(h *hello) { h.extensions = ext(extensionALPN, alpnList("h2", "http/1.1")) }), ClientHello{ALPN: []string{"h2", "http/1.1"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseClientHello(tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if got.ServerName != tc.want.ServerName || !slices.Equal(got.ALPN, tc.want.ALPN) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The size limit counts record headers: a hello that fits only without
// them is too large.
func TestParseClientHelloLimit(t *testing.T) {
	h := defaultHello()
	pad := MaxHelloSize - recordHeaderLen - handshakeHeaderLen - len(h.body()) - 4
	h.extensions = append(h.extensions, ext(21, make([]byte, pad))...)
	rec := h.record()
	if len(rec) != MaxHelloSize {
		t.Fatalf("built %d bytes, want %d", len(rec), MaxHelloSize)
	}
	if _, err := ParseClientHello(rec); err != nil {
		t.Fatalf("a hello of exactly MaxHelloSize: %v", err)
	}
	if _, err := ParseClientHello(rec[:MaxHelloSize-1]); err != ErrIncomplete {
		t.Fatalf("its prefix: %v", err)
	}
	h.extensions = append(h.extensions, ext(22, nil)...)
	if _, err := ParseClientHello(h.record()); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("one extension more: %v", err)
	}
	if _, err := ParseClientHello(tlstest.Refragment(rec, 8000)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("the same in three records: %v", err)
	}
}

func BenchmarkParseClientHello(b *testing.B) {
	flight := tlstest.ClientHello(b, &tls.Config{ServerName: reviews, NextProtos: istioALPN})
	b.ReportAllocs()
	b.SetBytes(int64(len(flight)))
	for b.Loop() {
		if _, err := ParseClientHello(flight); err != nil {
			b.Fatal(err)
		}
	}
}
