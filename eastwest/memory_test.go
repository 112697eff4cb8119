package eastwest_test

import (
	"net"
	"os/exec"
	"testing"
	"time"
)

// stalledConns is how many connections send one byte of a hello and stall.
const stalledConns = 5000

// Limits the stalled test checks: before, a stalled hello held a 16 KiB
// buffer (17,440 of them took 246 MB), and the heap they left went back
// to the OS only minutes after they ended.
const (
	maxKiBPerStalledHello = 8
	memoryReturnedWithin  = time.Minute
)

// TestGatewayStalledHellosCostLittle opens thousands of connections to a
// gateway process that each send the first byte of a ClientHello and
// stall, reads what they cost the process, closes them, and checks that
// the process gives the memory back to the OS within a minute.
func TestGatewayStalledHellosCostLittle(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("the go tool is needed to build the gateway process")
	}
	bin := buildGateway(t, goTool)
	backend := freeAddr(t)
	gwAddr := freeAddr(t)
	gw := startChild(t, "gateway", gwAddr, nil, bin, "-listen", gwAddr, "-name", benchName, "-upstream", backend,
		"-lifetime", "3m", "-stats-every", "100ms", "-return-memory-every", "2s")
	waitUntil(t, "the first stats", func() bool { return readStats(t, gw).Accepted == 1 })
	before := sampleProc(t, gw.pid)

	conns := make([]net.Conn, 0, stalledConns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range stalledConns {
		c, err := net.DialTimeout("tcp", gwAddr, idleWait)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
		if _, err := c.Write([]byte{22}); err != nil { // a handshake record, no more
			t.Fatal(err)
		}
	}
	waitUntil(t, "every connection accepted", func() bool { return readStats(t, gw).Active == stalledConns })
	held := sampleProc(t, gw.pid)
	perConn := float64(held.rssKiB-before.rssKiB) / stalledConns
	t.Logf("%d stalled hellos: RSS %d -> %d KiB, %.1f KiB each, %.2f fds each",
		stalledConns, before.rssKiB, held.rssKiB, perConn, float64(held.fds-before.fds)/stalledConns)
	if perConn > maxKiBPerStalledHello {
		t.Errorf("a stalled one-byte hello costs %.1f KiB, want at most %d", perConn, maxKiBPerStalledHello)
	}

	closed := time.Now()
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	waitUntil(t, "the connections to end", func() bool { return readStats(t, gw).Active == 0 })
	// 70% of what the burst took goes back (Go's background scavenger
	// alone gets to about 65% in a minute). What stays is what Go never
	// frees but reuses: a goroutine descriptor and a poll descriptor per
	// connection that was open at once.
	target := before.rssKiB + (held.rssKiB-before.rssKiB)*3/10
	for rss := sampleProc(t, gw.pid).rssKiB; rss > target; rss = sampleProc(t, gw.pid).rssKiB {
		if time.Since(closed) > memoryReturnedWithin {
			t.Fatalf("RSS still %d KiB %s after the stalled connections ended; %d before them, %d with them",
				rss, memoryReturnedWithin, before.rssKiB, held.rssKiB)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("RSS back to %d KiB %s after the connections closed", sampleProc(t, gw.pid).rssKiB, time.Since(closed).Round(100*time.Millisecond))
	waitUntil(t, "the return counted", func() bool { return readStats(t, gw).MemoryReturns >= 1 })
}
