package eastwest

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/federate/federate/eastwest/internal/tlstest"
)

// idleConns is how many idle connections TestGatewayHoldsIdleConnections
// holds through the gateway. The target is 10,000; in one process every
// connection costs 8 fds here (client, backend, the gateway's two sockets
// and the two pipes splice holds), so the unit test stays at 1,000.
const idleConns = 1000

// processSample is what the process holds at one moment.
type processSample struct {
	rssKiB     int
	fds        int
	goroutines int
}

func sampleProcess(t *testing.T) processSample {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	s := processSample{goroutines: runtime.NumGoroutine()}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			s.rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	s.fds = len(fds)
	return s
}

func (s processSample) minus(o processSample) processSample {
	return processSample{s.rssKiB - o.rssKiB, s.fds - o.fds, s.goroutines - o.goroutines}
}

func TestGatewayHoldsIdleConnections(t *testing.T) {
	hello := tlstest.ClientHello(t, &tls.Config{ServerName: reviewsSNI})

	// A plain TCP backend: it takes the hello, answers one byte and waits
	// for the end of the stream.
	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var open atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := lis.AcceptTCP()
			if err != nil {
				return
			}
			open.Add(1)
			wg.Go(func() {
				defer open.Add(-1)
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				if _, err := io.ReadFull(c, make([]byte, len(hello))); err != nil {
					return
				}
				if _, err := c.Write([]byte{1}); err != nil {
					return
				}
				io.Copy(io.Discard, c)
			})
		}
	})
	t.Cleanup(func() {
		lis.Close()
		wg.Wait()
	})
	gw := startGateway(t, Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{lis.Addr().String()}}}})

	var conns []net.Conn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	defer closeAll()
	openIdle := func(addr string) {
		t.Helper()
		for range idleConns {
			c, err := net.DialTimeout("tcp", addr, waitTimeout)
			if err != nil {
				t.Fatalf("connection %d: %v", len(conns), err)
			}
			conns = append(conns, c)
			c.SetDeadline(time.Now().Add(waitTimeout))
			if _, err := c.Write(hello); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				t.Fatalf("connection %d: %v", len(conns), err)
			}
		}
	}

	// Direct connections to the backend measure what the test's own ends
	// cost, so that the difference is the gateway's.
	before := sampleProcess(t)
	openIdle(lis.Addr().String())
	direct := sampleProcess(t).minus(before)
	closeAll()
	eventually(t, "the direct connections to close", func() bool { return open.Load() == 0 })

	before = sampleProcess(t)
	openIdle(gw.addr)
	through := sampleProcess(t).minus(before)
	if st := gw.Stats(); st.Relayed != idleConns || st.Active != idleConns {
		t.Fatalf("relayed %d, active %d; want %d", st.Relayed, st.Active, idleConns)
	}
	gateway := through.minus(direct)
	n := float64(idleConns)
	t.Logf("%d idle connections (race detector: %v)", idleConns, raceEnabled)
	t.Logf("direct:          RSS %+d KiB, %+d fds, %+d goroutines", direct.rssKiB, direct.fds, direct.goroutines)
	t.Logf("through gateway: RSS %+d KiB, %+d fds, %+d goroutines", through.rssKiB, through.fds, through.goroutines)
	t.Logf("gateway per idle connection: %.1f KiB RSS, %.1f fds, %.1f goroutines",
		float64(gateway.rssKiB)/n, float64(gateway.fds)/n, float64(gateway.goroutines)/n)

	closeAll()
	eventually(t, "the gateway's connections to end", func() bool { return gw.Stats().Active == 0 })
	eventually(t, "the backend's connections to end", func() bool { return open.Load() == 0 })
}
