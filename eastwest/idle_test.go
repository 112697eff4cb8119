package eastwest_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/federate/federate/eastwest/internal/tlstest"
)

// idleConns is how many idle connections the gateway must hold.
const idleConns = 10_000

// idleSettle is how long connections idle before they are measured: the
// gateway parks directions idle for one to two seconds, and gives the
// stacks of their goroutines back to the OS at most every 5 s.
const idleSettle = 7 * time.Second

// idleWait bounds each wait of the idle test.
const idleWait = 10 * time.Second

// maxFDsPerIdleConn: an idle connection holds its two sockets; a pipe for
// splice only while bytes flow.
const maxFDsPerIdleConn = 4

// maxKiBPerIdleConn: an idle connection holds no goroutine (its directions
// park) and no buffer. RSS moves with the allocator and the machine, so
// this catches a goroutine or a buffer per connection (8.9 KiB before they
// parked); the 4 KiB goal is measured in BenchmarkGatewayVsPeers.
const maxKiBPerIdleConn = 6

// procSample is what a process holds at one moment.
type procSample struct {
	rssKiB int
	fds    int
}

func sampleProc(t testing.TB, pid int) procSample {
	t.Helper()
	var total procSample
	for _, p := range procTree(t, pid) {
		s := sampleOne(t, p)
		total.rssKiB += s.rssKiB
		total.fds += s.fds
	}
	return total
}

// sampleOne samples one process, without its children.
func sampleOne(t testing.TB, pid int) procSample {
	var s procSample
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			s.rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	s.fds = len(fds)
	return s
}

// idleTarget is how many idle connections one gateway process can hold
// here: 10,000, unless the hard limit on open files (which an
// unprivileged process cannot raise) leaves room for fewer, at two
// sockets each.
func idleTarget(t *testing.T) int {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	return int(min(idleConns, (lim.Max-64)/2))
}

// TestGatewayHoldsIdleConnections holds 10,000 idle connections through a
// gateway process and reads what they cost it from /proc. The gateway runs
// as its own process, built without the race detector, so that its
// numbers are its own and its goroutines stay clear of the detector's
// limit.
func TestGatewayHoldsIdleConnections(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("the go tool is needed to build the gateway process")
	}
	n := idleTarget(t)
	hello := tlstest.ClientHello(t, &tls.Config{ServerName: benchName})
	bin := buildGateway(t, goTool)
	// Each process holds one end: the backend, the gateway, and this one
	// the clients, so no process needs more open files than the limit.
	backend := freeAddr(t)
	startProcess(t, "backend", backend, nil, bin, "-echo", "-listen", backend, "-lifetime", "5m")
	gwAddr := freeAddr(t)
	gw := startChild(t, "gateway", gwAddr, nil, bin, "-listen", gwAddr, "-name", benchName, "-upstream", backend, "-lifetime", "5m", "-stats-every", "100ms")
	pid := gw.pid
	before := sampleProc(t, pid)

	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	echo := make([]byte, len(hello))
	for range n {
		c, err := net.DialTimeout("tcp", gwAddr, idleWait)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(idleWait))
		if _, err := c.Write(hello); err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		if _, err := io.ReadFull(c, echo); err != nil {
			t.Fatalf("connection %d got no echo through the gateway: %v", len(conns), err)
		}
	}
	opened := time.Since(start)
	time.Sleep(idleSettle)
	held := sampleProc(t, pid)

	st := readStats(t, gw)
	if st.Parked != int64(2*n) {
		t.Errorf("%d directions parked, want all %d", st.Parked, 2*n)
	}
	fdsPer := float64(held.fds-before.fds) / float64(n)
	kibPer := float64(held.rssKiB-before.rssKiB) / float64(n)
	t.Logf("%d idle connections opened in %s; the gateway holds %+d fds (%.2f each) and %+d KiB RSS (%.1f KiB each)",
		n, opened.Round(time.Millisecond), held.fds-before.fds, fdsPer, held.rssKiB-before.rssKiB, kibPer)
	if fdsPer > maxFDsPerIdleConn {
		t.Errorf("%.2f file descriptors per idle connection, want at most %d", fdsPer, maxFDsPerIdleConn)
	}
	if kibPer > maxKiBPerIdleConn {
		t.Errorf("%.1f KiB per idle connection, want at most %d", kibPer, maxKiBPerIdleConn)
	}
	// Idle connections still relay, the first opened and the last.
	for _, c := range []net.Conn{conns[0], conns[len(conns)-1]} {
		c.SetDeadline(time.Now().Add(idleWait))
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, echo[:4]); err != nil || string(echo[:4]) != "ping" {
			t.Fatalf("an idle connection no longer relays: %q, %v", echo[:4], err)
		}
	}

	for _, c := range conns {
		c.Close()
	}
	conns = nil
	// What stays is the pool of empty pipes that the connections used.
	const pooledPipeFDs = 64
	for deadline := time.Now().Add(idleWait); sampleProc(t, pid).fds > before.fds+pooledPipeFDs; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway still holds %d fds %s after the connections closed, had %d before", sampleProc(t, pid).fds, idleWait, before.fds)
		}
	}
}
