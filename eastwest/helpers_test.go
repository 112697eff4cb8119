package eastwest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/eastwest/internal/tlstest"
)

// waitTimeout bounds every wait in these tests.
const waitTimeout = 10 * time.Second

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines still running after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits for goroutines started by this package to stop and
// returns the stacks of those that do not.
func leakedGoroutines() string {
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "federate/eastwest") && !strings.Contains(g, "eastwest.TestMain") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		<-tick.C
	}
}

// staticRouter routes the names it holds and no other.
type staticRouter map[string]Route

func (r staticRouter) Route(name string) (Route, error) {
	route, ok := r[name]
	if !ok {
		return Route{}, fmt.Errorf("%w: %q", ErrNoRoute, name)
	}
	return route, nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// runningGateway is a gateway serving on loopback.
type runningGateway struct {
	*Gateway
	addr string
	stop func() error // cancels Serve and returns its result
}

// startGateway serves a gateway with cfg on a loopback port until the test
// ends; the test fails if Serve does not return in time or returns an error.
func startGateway(t *testing.T, cfg Config) *runningGateway {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return serveGateway(t, g)
}

// serveGateway is startGateway for a gateway made by New.
func serveGateway(t *testing.T, g *Gateway) *runningGateway {
	t.Helper()
	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx, lis) }()
	var once sync.Once
	var result error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-served:
			case <-time.After(waitTimeout + g.cfg.DrainTimeout):
				result = fmt.Errorf("Serve did not return")
			}
		})
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &runningGateway{Gateway: g, addr: lis.Addr().String(), stop: stop}
}

// startTCPBackend serves plain TCP on a loopback port until the test
// ends: serve handles each connection, with waitTimeout to do it in, and
// the connection is closed after.
func startTCPBackend(t *testing.T, serve func(c *net.TCPConn)) string {
	t.Helper()
	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
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
			c, err := lis.AcceptTCP()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(waitTimeout))
				serve(c)
			})
		}
	})
	return lis.Addr().String()
}

// answerByeAtTheEnd reads until the client's FIN, then sends "bye" and
// its own FIN.
func answerByeAtTheEnd(c *net.TCPConn) {
	if _, err := io.Copy(io.Discard, c); err != nil {
		return
	}
	c.Write([]byte("bye"))
	c.CloseWrite()
}

// backend is a TLS server on loopback with a self-signed certificate.
type backend struct {
	name     string
	addr     string
	roots    *x509.CertPool
	accepted chan struct{} // receives once per accepted connection, if anyone listens
}

// startBackend serves TLS for name; serve handles each connection after
// the handshake. The backend stops when the test ends.
func startBackend(t *testing.T, name string, cfg *tls.Config, serve func(c *tls.Conn, raw *net.TCPConn)) *backend {
	t.Helper()
	cert, roots := tlstest.Certificate(t, name)
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.Certificates = []tls.Certificate{cert}
	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: lis.Addr().String(), roots: roots, accepted: make(chan struct{}, 100)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			raw, err := lis.AcceptTCP()
			if err != nil {
				return
			}
			select {
			case b.accepted <- struct{}{}:
			default:
			}
			wg.Go(func() {
				defer raw.Close()
				raw.SetDeadline(time.Now().Add(waitTimeout))
				c := tls.Server(raw, cfg)
				if err := c.Handshake(); err != nil {
					return
				}
				serve(c, raw)
			})
		}
	})
	t.Cleanup(func() {
		lis.Close()
		wg.Wait()
	})
	return b
}

// answerLines replies to each line with the backend's name and the line,
// until the client stops sending.
func answerLines(name string) func(*tls.Conn, *net.TCPConn) {
	return func(c *tls.Conn, _ *net.TCPConn) {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := fmt.Fprintf(c, "%s %s", name, buf[:n]); err != nil {
				return
			}
		}
	}
}

// dialTCP connects to addr on loopback with a bounded deadline.
func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(waitTimeout))
	return c.(*net.TCPConn)
}

// dialTLS connects through the gateway at addr to serverName, trusting
// roots. wrap, if set, sits between the TLS client and the TCP connection.
func dialTLS(t *testing.T, addr, serverName string, cfg *tls.Config, wrap func(*net.TCPConn) net.Conn) (*tls.Conn, error) {
	t.Helper()
	raw := dialTCP(t, addr)
	var conn net.Conn = raw
	if wrap != nil {
		conn = wrap(raw)
	}
	cfg = cfg.Clone()
	cfg.ServerName = serverName
	c := tls.Client(conn, cfg)
	if err := c.Handshake(); err != nil {
		return nil, err
	}
	return c, nil
}

// ask sends one line and returns the reply.
func ask(t *testing.T, c *tls.Conn, line string) string {
	t.Helper()
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// expectClosed asserts the peer closes c without sending anything.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil {
		t.Fatalf("read %d bytes, %v; want the connection closed", n, err)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the gateway did not close the connection: %v", err)
	}
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// closedPort returns a loopback address that refuses connections.
func closedPort(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
