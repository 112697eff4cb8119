package eastwest

import (
	"fmt"
	"sync/atomic"
)

// Refusal is why the gateway closed a connection without relaying it.
type Refusal uint8

// The reasons the gateway refuses a connection.
const (
	// RefusedNotTLS: the first bytes are not a TLS handshake record (plain
	// text, an SSLv2 hello, another record type).
	RefusedNotTLS Refusal = iota
	// RefusedBadHello: a malformed ClientHello.
	RefusedBadHello
	// RefusedHelloTooLarge: the hello was not complete within sni.MaxHelloSize bytes.
	RefusedHelloTooLarge
	// RefusedHelloTimeout: the hello was not complete within Config.HelloTimeout.
	RefusedHelloTimeout
	// RefusedHelloIncomplete: the client closed or reset the connection mid-hello.
	RefusedHelloIncomplete
	// RefusedNoData: the client closed or reset the connection without
	// sending a byte, as TCP health checks (the control planes' gateway
	// probes) do.
	RefusedNoData
	// RefusedNoSNI: the hello names no server.
	RefusedNoSNI
	// RefusedUnknownSNI: the Router does not route the name; never an open relay.
	RefusedUnknownSNI
	// RefusedRouteError: the Router failed for another reason.
	RefusedRouteError
	// RefusedNoUpstream: the route has no endpoint or none accepted the connection.
	RefusedNoUpstream
	// RefusedFDLimit: the gateway had no file descriptor left to connect
	// to an upstream; see Stats.AcceptPaused.
	RefusedFDLimit

	numRefusals
)

var refusalNames = [numRefusals]string{
	RefusedNotTLS:          "not_tls",
	RefusedBadHello:        "bad_hello",
	RefusedHelloTooLarge:   "hello_too_large",
	RefusedHelloTimeout:    "hello_timeout",
	RefusedHelloIncomplete: "hello_incomplete",
	RefusedNoData:          "no_data",
	RefusedNoSNI:           "no_sni",
	RefusedUnknownSNI:      "unknown_sni",
	RefusedRouteError:      "route_error",
	RefusedNoUpstream:      "no_upstream",
	RefusedFDLimit:         "fd_limit",
}

// String returns the reason as a metric label, e.g. "unknown_sni".
func (r Refusal) String() string {
	if r < numRefusals {
		return refusalNames[r]
	}
	return "unknown"
}

// MarshalText names the reason, so that Stats.Refused encodes in JSON as
// {"unknown_sni": 3, ...} rather than by number.
func (r Refusal) MarshalText() ([]byte, error) {
	if r >= numRefusals {
		return nil, fmt.Errorf("eastwest: refusal reason %d is not defined", uint8(r))
	}
	return []byte(refusalNames[r]), nil
}

// UnmarshalText parses a reason's name, as String returns it.
func (r *Refusal) UnmarshalText(b []byte) error {
	for i, name := range refusalNames {
		if name == string(b) {
			*r = Refusal(i)
			return nil
		}
	}
	return fmt.Errorf("eastwest: unknown refusal reason %q: want one of %v", b, refusalNames)
}

// Stats is a snapshot of the gateway's counters. Byte counts include the
// peeked ClientHello and are added when each direction of a connection
// ends.
type Stats struct {
	Accepted        uint64 // connections accepted
	Active          int64  // connections open now, in any phase
	Relayed         uint64 // connections connected to an upstream
	BytesToUpstream uint64
	BytesToClient   uint64
	ConnectFailures uint64 // upstream connect attempts that failed
	Ejections       uint64 // endpoints ejected for consecutive connect failures
	// AcceptBackoffs counts accepts that failed for lack of file
	// descriptors (or kernel memory), each followed by a pause.
	AcceptBackoffs uint64
	// AcceptPaused is true while accepting is paused for lack of file
	// descriptors; it clears on the first accept that succeeds.
	AcceptPaused bool
	// MemoryReturns counts the times memory was given back to the OS
	// after connections closed (Config.ReturnMemoryEvery).
	MemoryReturns uint64
	// Parked is how many directions of idle connections wait without a
	// goroutine now; Parks counts the times one parked.
	Parked  int64
	Parks   uint64
	Refused map[Refusal]uint64
}

// counters are the gateway's live counters.
type counters struct {
	accepted        atomic.Uint64
	active          atomic.Int64
	relayed         atomic.Uint64
	bytesToUpstream atomic.Uint64
	bytesToClient   atomic.Uint64
	connectFailures atomic.Uint64
	ejections       atomic.Uint64
	acceptBackoffs  atomic.Uint64
	acceptPaused    atomic.Bool
	memoryReturns   atomic.Uint64
	peakActive      atomic.Int64 // the most active since memory was last returned
	parks           atomic.Uint64
	resumes         atomic.Uint64
	refused         [numRefusals]atomic.Uint64
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Accepted:        c.accepted.Load(),
		Active:          c.active.Load(),
		Relayed:         c.relayed.Load(),
		BytesToUpstream: c.bytesToUpstream.Load(),
		BytesToClient:   c.bytesToClient.Load(),
		ConnectFailures: c.connectFailures.Load(),
		Ejections:       c.ejections.Load(),
		AcceptBackoffs:  c.acceptBackoffs.Load(),
		AcceptPaused:    c.acceptPaused.Load(),
		MemoryReturns:   c.memoryReturns.Load(),
		Refused:         make(map[Refusal]uint64, numRefusals),
	}
	resumes := c.resumes.Load() // before parks, which are never fewer
	s.Parks = c.parks.Load()
	s.Parked = int64(s.Parks - resumes)
	for r := range numRefusals {
		s.Refused[r] = c.refused[r].Load()
	}
	return s
}
