package sni

import (
	"fmt"
	"strings"
)

// MaxHelloSize is the most bytes a ClientHello may occupy on the wire,
// record headers included. Post-quantum hellos from browsers and Go's
// crypto/tls are 1.7-2.4 kB, so this leaves ample room while bounding what a
// peer can make the gateway buffer before it has routed anything.
const MaxHelloSize = 16 << 10

const (
	recordHeaderLen  = 5
	maxRecordPayload = 1 << 14 // TLSPlaintext.length limit, RFC 8446 section 5.1

	recordTypeChangeCipherSpec = 20
	recordTypeHeartbeat        = 24
	recordTypeHandshake        = 22

	handshakeTypeClientHello = 1
	handshakeHeaderLen       = 4

	extensionServerName = 0
	extensionALPN       = 16

	nameTypeHostName = 0
	maxHostNameLen   = 255 // BoringSSL's TLSEXT_MAXLEN_host_name
	maxSessionIDLen  = 32
)

// ClientHello is what the gateway routes by.
type ClientHello struct {
	// ServerName is the host_name of the server_name extension in lower
	// case, or empty when the client sent none.
	ServerName string
	// ALPN lists the application protocols the client offers, in its order.
	ALPN []string
}

// ParseClientHello parses the TLS ClientHello at the start of data, the
// first bytes a client sent on a connection. The hello may be fragmented
// over several handshake records and data may hold a part of it only: then
// the error is ErrIncomplete and the caller reads more and parses again.
// Bytes after the hello are ignored.
//
// Any other error is final and wraps one of the package's sentinels; an
// answer, once given for a prefix of a stream, never changes as more bytes
// of the same stream arrive. A hello that is not complete within
// MaxHelloSize bytes is ErrTooLarge.
func ParseClientHello(data []byte) (ClientHello, error) {
	msg, err := helloMessage(data)
	if err != nil {
		return ClientHello{}, err
	}
	return parseHello(msg[handshakeHeaderLen:])
}

// helloMessage returns the ClientHello handshake message, header included,
// reassembled from the records at the start of data. When the message sits
// in one record, as it almost always does, it aliases data.
func helloMessage(data []byte) ([]byte, error) {
	if len(data) == 0 {
		return nil, ErrIncomplete
	}
	if err := checkRecordType(data[0], 0); err != nil {
		return nil, err
	}
	limit := min(len(data), MaxHelloSize)
	var msg []byte
	want := handshakeHeaderLen // the bytes of msg we need; grows once the header is known
	for off := 0; ; {
		if off+recordHeaderLen > limit {
			return nil, incomplete(len(data))
		}
		hdr := data[off : off+recordHeaderLen]
		if err := checkRecordType(hdr[0], off); err != nil {
			return nil, err
		}
		if hdr[1] != 3 {
			return nil, fmt.Errorf("%w: record version %#04x at offset %d", ErrNotTLS, int(hdr[1])<<8|int(hdr[2]), off)
		}
		n := int(hdr[3])<<8 | int(hdr[4])
		if n == 0 || n > maxRecordPayload {
			return nil, fmt.Errorf("%w: record length %d at offset %d, want 1 to %d", ErrBadLength, n, off, maxRecordPayload)
		}
		end := off + recordHeaderLen + n
		frag := data[off+recordHeaderLen : min(end, limit)]

		// The common case: the whole message in the first record.
		if off == 0 && len(frag) >= handshakeHeaderLen {
			l, err := helloLength(frag)
			if err != nil {
				return nil, err
			}
			if len(frag) >= handshakeHeaderLen+l {
				return frag[:handshakeHeaderLen+l], nil
			}
		}

		for len(frag) > 0 {
			take := min(want-len(msg), len(frag))
			msg = append(msg, frag[:take]...)
			frag = frag[take:]
			if msg[0] != handshakeTypeClientHello {
				return nil, fmt.Errorf("%w: handshake type %d", ErrNotClientHello, msg[0])
			}
			if want == handshakeHeaderLen && len(msg) == handshakeHeaderLen {
				l, err := helloLength(msg)
				if err != nil {
					return nil, err
				}
				want += l
			}
			if len(msg) == want {
				return msg, nil
			}
		}
		if end > limit {
			return nil, incomplete(len(data))
		}
		off = end
	}
}

// helloLength checks the handshake header at the start of b, which holds at
// least handshakeHeaderLen bytes, and returns the body length it declares.
func helloLength(b []byte) (int, error) {
	if b[0] != handshakeTypeClientHello {
		return 0, fmt.Errorf("%w: handshake type %d", ErrNotClientHello, b[0])
	}
	l := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	if recordHeaderLen+handshakeHeaderLen+l > MaxHelloSize {
		return 0, fmt.Errorf("%w: the hello declares %d bytes, the limit is %d on the wire", ErrTooLarge, l, MaxHelloSize)
	}
	return l, nil
}

func checkRecordType(t byte, off int) error {
	switch {
	case t == recordTypeHandshake:
		return nil
	case off == 0 && t&0x80 != 0:
		return ErrSSLv2
	case off == 0 && (t < recordTypeChangeCipherSpec || t > recordTypeHeartbeat):
		return fmt.Errorf("%w: first byte %#02x", ErrNotTLS, t)
	default:
		return fmt.Errorf("%w: record type %d at offset %d", ErrRecordType, t, off)
	}
}

func incomplete(n int) error {
	if n >= MaxHelloSize {
		return fmt.Errorf("%w: not complete within %d bytes", ErrTooLarge, MaxHelloSize)
	}
	return ErrIncomplete
}

// parseHello parses a ClientHello body (RFC 8446 section 4.1.2, which is
// wire compatible with TLS 1.0-1.2 hellos).
func parseHello(s []byte) (ClientHello, error) {
	h, err := parseHelloFields(s)
	if err != nil {
		return ClientHello{}, err
	}
	return h, nil
}

func parseHelloFields(s []byte) (ClientHello, error) {
	var h ClientHello
	if _, ok := take(&s, 2+32); !ok {
		return h, fmt.Errorf("%w: version and random", ErrTruncated)
	}
	n, ok := u8(&s)
	if !ok {
		return h, fmt.Errorf("%w: session ID length", ErrTruncated)
	}
	if n > maxSessionIDLen {
		return h, fmt.Errorf("%w: session ID of %d bytes, at most %d allowed", ErrBadLength, n, maxSessionIDLen)
	}
	if _, ok := take(&s, n); !ok {
		return h, fmt.Errorf("%w: session ID", ErrTruncated)
	}
	if n, ok = u16(&s); !ok {
		return h, fmt.Errorf("%w: cipher suites length", ErrTruncated)
	}
	if n == 0 || n%2 != 0 {
		return h, fmt.Errorf("%w: cipher suites of %d bytes", ErrBadLength, n)
	}
	if _, ok := take(&s, n); !ok {
		return h, fmt.Errorf("%w: cipher suites", ErrTruncated)
	}
	if n, ok = u8(&s); !ok {
		return h, fmt.Errorf("%w: compression methods length", ErrTruncated)
	}
	if n == 0 {
		return h, fmt.Errorf("%w: no compression methods", ErrBadLength)
	}
	if _, ok := take(&s, n); !ok {
		return h, fmt.Errorf("%w: compression methods", ErrTruncated)
	}
	if len(s) == 0 {
		return h, nil // a TLS 1.0-1.2 hello may end here, without extensions
	}
	if n, ok = u16(&s); !ok {
		return h, fmt.Errorf("%w: extensions length", ErrTruncated)
	}
	if n > len(s) {
		return h, fmt.Errorf("%w: extensions declare %d bytes, %d present", ErrTruncated, n, len(s))
	}
	if n < len(s) {
		return h, fmt.Errorf("%w: %d bytes after the extensions", ErrBadLength, len(s)-n)
	}
	var seen extensionSet
	for len(s) > 0 {
		typ, ok := u16(&s)
		if !ok {
			return h, fmt.Errorf("%w: extension type", ErrTruncated)
		}
		if n, ok = u16(&s); !ok {
			return h, fmt.Errorf("%w: length of extension %d", ErrTruncated, typ)
		}
		data, ok := take(&s, n)
		if !ok {
			return h, fmt.Errorf("%w: extension %d declares %d bytes, %d present", ErrTruncated, typ, n, len(s))
		}
		if !seen.add(uint16(typ)) {
			return h, fmt.Errorf("%w: extension %d", ErrDuplicateExtension, typ)
		}
		var err error
		switch typ {
		case extensionServerName:
			h.ServerName, err = parseServerName(data)
		case extensionALPN:
			h.ALPN, err = parseALPN(data)
		}
		if err != nil {
			return h, err
		}
	}
	return h, nil
}

// parseServerName parses the server_name extension (RFC 6066 section 3).
func parseServerName(s []byte) (string, error) {
	n, ok := u16(&s)
	if !ok || n == 0 || n != len(s) {
		return "", fmt.Errorf("%w: server_name list of %d bytes in an extension of %d", ErrBadLength, n, len(s)+2)
	}
	var name string
	for len(s) > 0 {
		typ, ok := u8(&s)
		if !ok {
			return "", fmt.Errorf("%w: server_name entry type", ErrBadLength)
		}
		n, ok := u16(&s)
		if !ok {
			return "", fmt.Errorf("%w: server_name entry length", ErrBadLength)
		}
		entry, ok := take(&s, n)
		if !ok || n == 0 {
			return "", fmt.Errorf("%w: server_name entry of %d bytes, %d present", ErrBadLength, n, len(s))
		}
		if typ != nameTypeHostName {
			continue
		}
		if name != "" {
			return "", fmt.Errorf("%w: two host names", ErrBadServerName)
		}
		var err error
		if name, err = hostName(entry); err != nil {
			return "", err
		}
	}
	return name, nil
}

// hostName validates a host_name and returns it in lower case. It accepts
// letters, digits, '-', '_' and '.', as Istio's names need '_'.
func hostName(b []byte) (string, error) {
	if len(b) > maxHostNameLen {
		return "", fmt.Errorf("%w: %d bytes", ErrBadServerName, len(b))
	}
	upper := false
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c >= 'A' && c <= 'Z':
			upper = true
		case c == '.':
			if i == 0 || i == len(b)-1 || b[i-1] == '.' {
				return "", fmt.Errorf("%w: empty label in %q", ErrBadServerName, b)
			}
		default:
			return "", fmt.Errorf("%w: byte %#02x in %q", ErrBadServerName, c, b)
		}
	}
	if upper {
		return strings.ToLower(string(b)), nil
	}
	return string(b), nil
}

// parseALPN parses the application_layer_protocol_negotiation extension
// (RFC 7301 section 3.1).
func parseALPN(s []byte) ([]string, error) {
	n, ok := u16(&s)
	if !ok || n == 0 || n != len(s) {
		return nil, fmt.Errorf("%w: ALPN list of %d bytes in an extension of %d", ErrBadLength, n, len(s)+2)
	}
	var protos []string
	for len(s) > 0 {
		n, _ := u8(&s)
		p, ok := take(&s, n)
		if !ok || n == 0 {
			return nil, fmt.Errorf("%w: ALPN protocol of %d bytes, %d present", ErrBadLength, n, len(s))
		}
		protos = append(protos, string(p))
	}
	return protos, nil
}

// extensionSet remembers the extension types seen in one hello. Real hellos
// carry fewer than 32, which fit without allocating.
type extensionSet struct {
	small [32]uint16
	n     int
	large map[uint16]struct{}
}

// add records t and reports whether it was new.
func (e *extensionSet) add(t uint16) bool {
	for _, s := range e.small[:e.n] {
		if s == t {
			return false
		}
	}
	if _, dup := e.large[t]; dup {
		return false
	}
	if e.n < len(e.small) {
		e.small[e.n] = t
		e.n++
		return true
	}
	if e.large == nil {
		e.large = make(map[uint16]struct{})
	}
	e.large[t] = struct{}{}
	return true
}

func take(s *[]byte, n int) ([]byte, bool) {
	if len(*s) < n {
		return nil, false
	}
	b := (*s)[:n]
	*s = (*s)[n:]
	return b, true
}

func u8(s *[]byte) (int, bool) {
	b, ok := take(s, 1)
	if !ok {
		return 0, false
	}
	return int(b[0]), true
}

func u16(s *[]byte) (int, bool) {
	b, ok := take(s, 2)
	if !ok {
		return 0, false
	}
	return int(b[0])<<8 | int(b[1]), true
}
