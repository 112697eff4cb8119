package eastwest

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/federate/federate/eastwest/internal/tlstest"
)

// The gateway writes the hello straight after connect and waits only when
// the connect is not done yet: these tests make an upstream whose connect
// never completes, so that wait, its timeout and the drain that ends it
// run for real.

func TestGatewayConnectTimesOutAndFailsOver(t *testing.T) {
	const connectTimeout = 300 * time.Millisecond
	hole := unansweredPort(t)
	b := startBackend(t, reviewsSNI, nil, answerLines(reviewsSNI))
	gw := startGateway(t, Config{
		Router:         staticRouter{reviewsSNI: {Endpoints: []string{hole, b.addr}}},
		ConnectTimeout: connectTimeout,
	})
	start := time.Now()
	c, err := dialTLS(t, gw.addr, reviewsSNI, &tls.Config{RootCAs: b.roots}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, want := ask(t, c, "ping\n"), reviewsSNI+" ping\n"; got != want {
		t.Fatalf("reply %q, want %q", got, want)
	}
	if d := time.Since(start); d < connectTimeout {
		t.Fatalf("the reply came after %v, before the unanswered endpoint's connect timed out", d)
	}
	if st := gw.Stats(); st.ConnectFailures != 1 || st.Relayed != 1 {
		t.Fatalf("%d connect failures and %d relayed, want 1 and 1", st.ConnectFailures, st.Relayed)
	}
}

func TestGatewayDrainEndsAConnectThatWaits(t *testing.T) {
	hole := unansweredPort(t)
	gw := startGateway(t, Config{
		Router:         staticRouter{reviewsSNI: {Endpoints: []string{hole}}},
		ConnectTimeout: time.Hour,
		DrainTimeout:   100 * time.Millisecond,
	})
	c := dialTCP(t, gw.addr)
	write(tlstest.ClientHello(t, &tls.Config{ServerName: reviewsSNI}))(t, c)
	eventually(t, "the gateway's connect to wait", func() bool { return synSentTo(t, hole) })
	if err := gw.stop(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c)
	st := gw.Stats()
	if st.Refused[RefusedNoUpstream] != 1 || st.ConnectFailures != 0 {
		t.Fatalf("refused as no_upstream %d, %d connect failures; want 1 and 0 (the drain, not the endpoint, ended it)",
			st.Refused[RefusedNoUpstream], st.ConnectFailures)
	}
}

// unansweredPort returns a loopback address whose connects never
// complete: a listener with a backlog of 0 that never accepts, its one
// place taken, so the kernel drops further SYNs.
func unansweredPort(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	lis := os.NewFile(uintptr(fd), "unanswered")
	t.Cleanup(func() { lis.Close() })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	filler, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	return addr
}

// synSentTo reports whether a socket on this machine is connecting to
// addr (state SYN_SENT in /proc/net/tcp).
func synSentTo(t *testing.T, addr string) bool {
	t.Helper()
	table, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	want := fmt.Sprintf("0100007F:%04X", p)
	for _, line := range strings.Split(string(table), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[2] == want && f[3] == "02" {
			return true
		}
	}
	return false
}
