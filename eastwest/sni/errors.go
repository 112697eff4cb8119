package sni

import "errors"

// ErrIncomplete means the bytes so far are a valid beginning of a
// ClientHello: read more and parse again. Every other error is final: more
// bytes never change it.
var ErrIncomplete = errors.New("sni: incomplete ClientHello: read more bytes and parse again")

// Errors that refuse a connection's first bytes.
var (
	ErrNotTLS             = errors.New("sni: not TLS: the first bytes are not a TLS record")
	ErrSSLv2              = errors.New("sni: SSLv2-compatible ClientHello: it carries no server name; clients must send a TLS 1.0+ hello")
	ErrRecordType         = errors.New("sni: a TLS record other than handshake arrived before the ClientHello was complete")
	ErrNotClientHello     = errors.New("sni: the first handshake message is not a ClientHello")
	ErrTooLarge           = errors.New("sni: ClientHello exceeds the size limit")
	ErrBadLength          = errors.New("sni: malformed ClientHello: a length field is out of range")
	ErrTruncated          = errors.New("sni: malformed ClientHello: a field runs past the end of the message")
	ErrDuplicateExtension = errors.New("sni: malformed ClientHello: an extension appears twice")
	ErrBadServerName      = errors.New("sni: invalid server name: want an ASCII DNS name of at most 255 bytes with no trailing dot")
)

// Errors from ParseIstio.
var (
	ErrNotIstio     = errors.New("sni: not an Istio outbound name: want outbound_.<port>_.<subset>_.<fqdn>")
	ErrBadIstioName = errors.New("sni: invalid Istio outbound name")
)

// ErrNotInternal is returned by ParseInternal.
var ErrNotInternal = errors.New("sni: not a federation internal name")
