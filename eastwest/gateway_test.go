package eastwest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/eastwest/internal/tlstest"
)

const (
	reviewsSNI   = "outbound_.9080_._.reviews.default.svc.cluster.local"
	reviewsV1SNI = "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
	ratingsSNI   = "outbound_.9080_._.ratings.default.svc.cluster.local"
	secretSNI    = "outbound_.9080_._.secret.default.svc.cluster.local"
)

var istioALPN = []string{"istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"}

func TestNewNeedsARouter(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrNoRouter) {
		t.Fatalf("New without a Router: %v", err)
	}
}

func TestGatewayRoutesBySNI(t *testing.T) {
	router := staticRouter{}
	var backends []*backend
	for _, name := range []string{reviewsSNI, reviewsV1SNI, ratingsSNI} {
		b := startBackend(t, name, nil, answerLines(name))
		router[name] = Route{Endpoints: []string{b.addr}}
		backends = append(backends, b)
	}
	gw := startGateway(t, Config{Router: router})

	for _, b := range backends {
		// Each backend's certificate names only itself, so verifying it
		// proves where the connection went.
		c, err := dialTLS(t, gw.addr, b.name, &tls.Config{RootCAs: b.roots, NextProtos: istioALPN}, nil)
		if err != nil {
			t.Fatalf("%s: %v", b.name, err)
		}
		if got, want := ask(t, c, "ping\n"), b.name+" ping\n"; got != want {
			t.Fatalf("reply %q, want %q", got, want)
		}
		c.Close()
	}
	eventually(t, "connections to end", func() bool { return gw.Stats().Active == 0 })
	st := gw.Stats()
	if st.Accepted != 3 || st.Relayed != 3 {
		t.Fatalf("accepted %d, relayed %d; want 3 and 3", st.Accepted, st.Relayed)
	}
	if st.BytesToUpstream < 3*200 || st.BytesToClient < 3*200 {
		t.Fatalf("bytes to upstream %d, to client %d: too few for three TLS handshakes", st.BytesToUpstream, st.BytesToClient)
	}
	for r, n := range st.Refused {
		if n != 0 {
			t.Errorf("refused %d for %s", n, r)
		}
	}
}

func TestGatewayRefuses(t *testing.T) {
	backend := startBackend(t, reviewsSNI, nil, answerLines(reviewsSNI))
	noSNI := tlstest.ClientHello(t, &tls.Config{InsecureSkipVerify: true})
	hello := tlstest.ClientHello(t, &tls.Config{ServerName: reviewsSNI})
	// supported_versions renamed to a second server_name.
	duplicate := tlstest.RenameExtension(hello, 0x002b, 0x0000)

	tests := []struct {
		name  string
		send  func(t *testing.T, c *net.TCPConn)
		route *Route // replaces the backend's route
		want  Refusal
	}{
		{name: "plain HTTP", want: RefusedNotTLS, send: write([]byte("GET / HTTP/1.1\r\nHost: reviews\r\n\r\n"))},
		{name: "SSLv2 hello", want: RefusedNotTLS, send: write([]byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0x15})},
		{name: "alert record", want: RefusedNotTLS, send: write([]byte{21, 3, 3, 0, 2, 2, 40})},
		{name: "no SNI", want: RefusedNoSNI, send: write(noSNI)},
		{name: "unexported SNI", want: RefusedUnknownSNI, send: func(t *testing.T, c *net.TCPConn) {
			client := tls.Client(c, &tls.Config{ServerName: secretSNI, RootCAs: backend.roots})
			if err := client.Handshake(); err == nil {
				t.Fatal("the handshake for an unexported name succeeded")
			}
		}},
		{name: "declared too large", want: RefusedHelloTooLarge, send: write([]byte{22, 3, 1, 0, 4, 1, 0, 0x50, 0})},
		{name: "too large over records", want: RefusedHelloTooLarge, send: write(tlstest.Refragment(
			append([]byte{22, 3, 1, 0x3e, 0x84, 1, 0, 0x3e, 0x80}, make([]byte, 16000)...), 1))},
		{name: "duplicate extension", want: RefusedBadHello, send: write(duplicate)},
		{name: "half a hello, then FIN", want: RefusedHelloIncomplete, send: func(t *testing.T, c *net.TCPConn) {
			write(hello[:len(hello)/2])(t, c)
			c.CloseWrite()
		}},
		{name: "closed without a byte", want: RefusedNoData, send: func(t *testing.T, c *net.TCPConn) {
			c.CloseWrite()
		}},
		{name: "reset without a byte", want: RefusedNoData, send: func(t *testing.T, c *net.TCPConn) {
			c.SetLinger(0) // close sends RST
			c.Close()
		}},
		{name: "no endpoint accepts", want: RefusedNoUpstream, route: &Route{Endpoints: []string{closedPort(t)}}, send: write(hello)},
		{name: "no endpoints", want: RefusedNoUpstream, route: &Route{}, send: write(hello)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			router := staticRouter{reviewsSNI: {Endpoints: []string{backend.addr}}}
			if tc.route != nil {
				router[reviewsSNI] = *tc.route
			}
			gw := startGateway(t, Config{Router: router})
			c := dialTCP(t, gw.addr)
			tc.send(t, c)
			expectClosed(t, c)
			eventually(t, "the connection to end", func() bool { st := gw.Stats(); return st.Accepted == 1 && st.Active == 0 })
			st := gw.Stats()
			for r, n := range st.Refused {
				want := uint64(0)
				if r == tc.want {
					want = 1
				}
				if n != want {
					t.Errorf("refused for %s: %d, want %d", r, n, want)
				}
			}
			if st.Relayed != 0 {
				t.Errorf("relayed %d connections", st.Relayed)
			}
		})
	}
	select {
	case <-backend.accepted:
		t.Fatal("a refused connection reached the backend")
	default:
	}
}

// write sends b; the gateway may close the connection before it has all
// of b, which the caller checks.
func write(b []byte) func(*testing.T, *net.TCPConn) {
	return func(t *testing.T, c *net.TCPConn) {
		t.Helper()
		if _, err := c.Write(b); err != nil {
			t.Logf("write: %v", err)
		}
	}
}

// splitConn sends a TLS client's first flight re-fragmented into records
// of recordSize bytes (0 keeps them), and one byte per write if oneByte.
type splitConn struct {
	*net.TCPConn
	recordSize int
	oneByte    bool
	sent       bool
	hello      []byte // the first flight as the TLS client wrote it
}

func (c *splitConn) Write(b []byte) (int, error) {
	if c.sent {
		return c.TCPConn.Write(b)
	}
	c.sent = true
	c.hello = slices.Clone(b)
	out := b
	if c.recordSize > 0 {
		out = tlstest.Refragment(b, c.recordSize)
	}
	if !c.oneByte {
		_, err := c.TCPConn.Write(out)
		return len(b), err
	}
	for i := range out {
		if _, err := c.TCPConn.Write(out[i : i+1]); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

func TestGatewayFragmentedHello(t *testing.T) {
	b := startBackend(t, reviewsSNI, nil, answerLines(reviewsSNI))
	gw := startGateway(t, Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{b.addr}}}})
	for _, tc := range []struct {
		name       string
		recordSize int
		oneByte    bool
	}{
		{"1-byte TCP writes", 0, true},
		{"records of 50 bytes", 50, false},
		{"records of 1 byte in 1-byte writes", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var split *splitConn
			wrap := func(c *net.TCPConn) net.Conn {
				c.SetNoDelay(true)
				split = &splitConn{TCPConn: c, recordSize: tc.recordSize, oneByte: tc.oneByte}
				return split
			}
			cfg := &tls.Config{RootCAs: b.roots, CurvePreferences: []tls.CurveID{tls.X25519MLKEM768}}
			c, err := dialTLS(t, gw.addr, reviewsSNI, cfg, wrap)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got, want := ask(t, c, "ping\n"), reviewsSNI+" ping\n"; got != want {
				t.Fatalf("reply %q, want %q", got, want)
			}
			t.Logf("hello of %d bytes", len(split.hello))
		})
	}
}

func TestGatewayPostQuantumHello(t *testing.T) {
	serverCfg := &tls.Config{CurvePreferences: []tls.CurveID{tls.SecP384r1MLKEM1024, tls.X25519MLKEM768, tls.X25519}}
	b := startBackend(t, reviewsSNI, serverCfg, answerLines(reviewsSNI))
	gw := startGateway(t, Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{b.addr}}}})
	padded := slices.Clone(istioALPN)
	for i := range 12 {
		padded = append(padded, fmt.Sprintf("padding-protocol-%02d-%s", i, strings.Repeat("x", 20)))
	}
	for _, tc := range []struct {
		name    string
		curve   tls.CurveID
		alpn    []string
		minSize int
	}{
		{"X25519MLKEM768", tls.X25519MLKEM768, istioALPN, 1500},
		{"SecP384r1MLKEM1024", tls.SecP384r1MLKEM1024, istioALPN, 1900},
		{"SecP384r1MLKEM1024 and a long ALPN list", tls.SecP384r1MLKEM1024, padded, 2300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var split *splitConn
			wrap := func(c *net.TCPConn) net.Conn {
				split = &splitConn{TCPConn: c}
				return split
			}
			cfg := &tls.Config{RootCAs: b.roots, NextProtos: tc.alpn, CurvePreferences: []tls.CurveID{tc.curve}}
			c, err := dialTLS(t, gw.addr, reviewsSNI, cfg, wrap)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.ConnectionState().CurveID; got != tc.curve {
				t.Fatalf("negotiated %v, want %v", got, tc.curve)
			}
			if got, want := ask(t, c, "ping\n"), reviewsSNI+" ping\n"; got != want {
				t.Fatalf("reply %q, want %q", got, want)
			}
			if len(split.hello) < tc.minSize {
				t.Fatalf("hello of %d bytes, want at least %d", len(split.hello), tc.minSize)
			}
			t.Logf("hello of %d bytes routed", len(split.hello))
		})
	}
}

func TestGatewayCutsOffSlowHellos(t *testing.T) {
	const timeout = 300 * time.Millisecond
	hello := tlstest.ClientHello(t, &tls.Config{ServerName: reviewsSNI})
	b := startBackend(t, reviewsSNI, nil, answerLines(reviewsSNI))
	gw := startGateway(t, Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{b.addr}}}, HelloTimeout: timeout})

	t.Run("stalls", func(t *testing.T) {
		start := time.Now() // before the gateway accepts and sets its deadline
		c := dialTCP(t, gw.addr)
		write(hello[:10])(t, c)
		expectClosed(t, c)
		if d := time.Since(start); d < timeout {
			t.Fatalf("cut off after %v, before the %v deadline", d, timeout)
		}
	})
	t.Run("trickles", func(t *testing.T) {
		// One byte every 10 ms would take 15 s; progress does not extend
		// the deadline.
		c := dialTCP(t, gw.addr)
		start := time.Now()
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for i := range hello {
				if _, err := c.Write(hello[i : i+1]); err != nil {
					return
				}
				<-tick.C
			}
		}()
		expectClosed(t, c)
		if d := time.Since(start); d > timeout+2*time.Second {
			t.Fatalf("cut off after %v, want about %v", d, timeout)
		}
		c.Close()
		select {
		case <-stopped:
		case <-time.After(waitTimeout):
			t.Fatal("the trickling writer did not stop")
		}
	})
	eventually(t, "the connections to end", func() bool { return gw.Stats().Active == 0 })
	if got := gw.Stats().Refused[RefusedHelloTimeout]; got != 2 {
		t.Fatalf("refused for hello_timeout: %d, want 2", got)
	}
	select {
	case <-b.accepted:
		t.Fatal("a slow hello reached the backend")
	default:
	}
}

func TestGatewayHalfClose(t *testing.T) {
	sawFIN := make(chan error, 1)
	b := startBackend(t, reviewsSNI, nil, func(c *tls.Conn, raw *net.TCPConn) {
		req, err := io.ReadAll(c) // until the client's close_notify
		if err != nil {
			sawFIN <- err
			return
		}
		// The gateway passed the client's FIN on: the TCP stream ends too.
		n, err := raw.Read(make([]byte, 1))
		if n != 0 || err != io.EOF {
			sawFIN <- errors.New("no EOF after close_notify")
			return
		}
		sawFIN <- nil
		io.WriteString(c, "reply to "+string(req))
		c.Close()
	})
	gw := startGateway(t, Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{b.addr}}}})

	raw := dialTCP(t, gw.addr)
	c := tls.Client(raw, &tls.Config{ServerName: reviewsSNI, RootCAs: b.roots})
	if _, err := io.WriteString(c, "request"); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil { // close_notify
		t.Fatal(err)
	}
	if err := raw.CloseWrite(); err != nil { // FIN
		t.Fatal(err)
	}
	select {
	case err := <-sawFIN:
		if err != nil {
			t.Fatalf("backend: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the backend did not see the client's half-close")
	}
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the reply after half-closing: %v", err)
	}
	if string(reply) != "reply to request" {
		t.Fatalf("reply %q", reply)
	}
	eventually(t, "the connection to end", func() bool { return gw.Stats().Active == 0 })
}

func TestGatewayEjectsFailingEndpoints(t *testing.T) {
	const failures = 3
	dead := closedPort(t)
	b := startBackend(t, reviewsSNI, nil, answerLines(reviewsSNI))
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	gw := startGateway(t, Config{
		Router: staticRouter{
			reviewsSNI: {Endpoints: []string{dead, b.addr}},
			ratingsSNI: {Endpoints: []string{dead}},
		},
		Outlier: OutlierConfig{ConsecutiveFailures: failures, EjectionTime: time.Minute},
		Now:     clock.Now,
	})
	roundTrip := func() {
		t.Helper()
		c, err := dialTLS(t, gw.addr, reviewsSNI, &tls.Config{RootCAs: b.roots}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got, want := ask(t, c, "ping\n"), reviewsSNI+" ping\n"; got != want {
			t.Fatalf("reply %q, want %q", got, want)
		}
	}
	check := func(stage string, connectFailures, ejections uint64) {
		t.Helper()
		st := gw.Stats()
		if st.ConnectFailures != connectFailures || st.Ejections != ejections {
			t.Fatalf("%s: %d connect failures and %d ejections, want %d and %d",
				stage, st.ConnectFailures, st.Ejections, connectFailures, ejections)
		}
	}

	// Each connection tries the dead endpoint first, then the next one.
	for range failures {
		roundTrip()
	}
	check("after the failures", failures, 1)
	// Ejected: skipped.
	for range 5 {
		roundTrip()
	}
	check("while ejected", failures, 1)

	// A route whose every endpoint is ejected tries them anyway.
	c := dialTCP(t, gw.addr)
	write(tlstest.ClientHello(t, &tls.Config{ServerName: ratingsSNI}))(t, c)
	expectClosed(t, c)
	eventually(t, "the refusal", func() bool { return gw.Stats().Refused[RefusedNoUpstream] == 1 })
	check("all ejected", failures+1, 1)

	// After the ejection time it is tried again.
	clock.Advance(time.Minute)
	roundTrip()
	check("after the ejection time", failures+2, 1)
}

func TestGatewayDrains(t *testing.T) {
	b := startBackend(t, reviewsSNI, nil, answerLines(reviewsSNI))
	router := staticRouter{reviewsSNI: {Endpoints: []string{b.addr}}}
	cfg := &tls.Config{RootCAs: b.roots}

	t.Run("connections finish", func(t *testing.T) {
		gw := startGateway(t, Config{Router: router, DrainTimeout: waitTimeout})
		c, err := dialTLS(t, gw.addr, reviewsSNI, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		stopped := make(chan error, 1)
		go func() { stopped <- gw.stop() }()
		// The listener closes; the established connection goes on.
		eventually(t, "the listener to close", func() bool {
			probe, err := net.DialTimeout("tcp", gw.addr, waitTimeout)
			if err == nil {
				probe.Close()
			}
			return err != nil
		})
		if got, want := ask(t, c, "still there?\n"), reviewsSNI+" still there?\n"; got != want {
			t.Fatalf("reply %q, want %q", got, want)
		}
		select {
		case err := <-stopped:
			t.Fatalf("Serve returned (%v) while a connection was open", err)
		default:
		}
		c.Close()
		select {
		case err := <-stopped:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(waitTimeout / 2):
			t.Fatal("Serve did not return once the last connection closed")
		}
	})

	t.Run("drain timeout closes them", func(t *testing.T) {
		const drain = 200 * time.Millisecond
		gw := startGateway(t, Config{Router: router, DrainTimeout: drain})
		c, err := dialTLS(t, gw.addr, reviewsSNI, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle := dialTCP(t, gw.addr) // never sends its hello
		eventually(t, "both connections", func() bool { return gw.Stats().Accepted == 2 })
		start := time.Now()
		if err := gw.stop(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < drain {
			t.Fatalf("Serve returned after %v, before the drain timeout", d)
		}
		expectClosed(t, idle)
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("the connection is still open after the drain")
		}
		if st := gw.Stats(); st.Active != 0 {
			t.Fatalf("%d connections active after Serve returned", st.Active)
		}
	})
}

// The router sees the name in lower case whatever the client sent.
func TestGatewayRoutesLowerCase(t *testing.T) {
	b := startBackend(t, reviewsSNI, nil, answerLines(reviewsSNI))
	gw := startGateway(t, Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{b.addr}}}})
	c := dialTCP(t, gw.addr)
	write(tlstest.ClientHello(t, &tls.Config{ServerName: strings.ToUpper(reviewsSNI)}))(t, c)
	select {
	case <-b.accepted:
	case <-time.After(waitTimeout):
		t.Fatal("the upper-case name was not routed")
	}
}
