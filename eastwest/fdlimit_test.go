package eastwest_test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/eastwest"
	"github.com/federate/federate/eastwest/internal/tlstest"
)

// gatewayOpenFiles is the gateway process's soft limit on open files in
// the test: room for about twenty relayed connections.
const gatewayOpenFiles = 48

// outOfFDsLog is what the gateway logs, once, when it runs out.
const outOfFDsLog = "out of file descriptors"

// TestGatewayAtTheOpenFileLimit runs a gateway process whose limit on open
// files is low, opens connections through it until accept fails with
// EMFILE and checks that: accept backs off and says so once in the log and
// in its stats; the connections it holds keep relaying, all at once,
// though no pipe can be made for splice; the connection waiting in the
// backlog is relayed as soon as others close; and accepting resumes.
func TestGatewayAtTheOpenFileLimit(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("the go tool is needed to build the gateway process")
	}
	hello := tlstest.ClientHello(t, &tls.Config{ServerName: benchName})
	bin := buildGateway(t, goTool)
	backend := freeAddr(t)
	startProcess(t, "backend", backend, nil, bin, "-echo", "-listen", backend, "-lifetime", "2m")
	gwAddr := freeAddr(t)
	gw := startChild(t, "gateway", gwAddr, nil, bin, "-listen", gwAddr, "-name", benchName, "-upstream", backend,
		"-lifetime", "2m", "-max-open-files", strconv.Itoa(gatewayOpenFiles), "-stats-every", "10ms", "-v")

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Open connections until one waits in the backlog: its echo comes
	// only once the gateway accepts it.
	var pending net.Conn
	var pendingEcho chan error
	for pending == nil {
		if len(conns) > gatewayOpenFiles {
			t.Fatalf("%d connections relayed under a limit of %d open files", len(conns), gatewayOpenFiles)
		}
		c, err := net.DialTimeout("tcp", gwAddr, idleWait)
		if err != nil {
			t.Fatal(err) // the kernel completes the handshake; the backlog holds it
		}
		echoed := echoAsync(c, hello)
		var result error
		returned := false
		waitUntil(t, "an echo or a paused accept", func() bool {
			select {
			case result = <-echoed:
				returned = true
				return true
			default:
			}
			return readStats(t, gw).AcceptPaused
		})
		switch {
		case !returned:
			pending, pendingEcho = c, echoed
		case result == nil:
			conns = append(conns, c)
		default:
			t.Fatalf("connection %d: %v", len(conns)+1, result)
		}
	}
	// Two more wait in the backlog, whatever became of the one above
	// (accepted with the last fd, it waits for one to connect upstream).
	waiting := []net.Conn{pending}
	waitingEcho := []chan error{pendingEcho}
	for range 2 {
		c, err := net.DialTimeout("tcp", gwAddr, idleWait)
		if err != nil {
			t.Fatal(err)
		}
		waiting = append(waiting, c)
		waitingEcho = append(waitingEcho, echoAsync(c, hello))
	}
	waitUntil(t, "several backoffs", func() bool { return readStats(t, gw).AcceptBackoffs >= 4 }, gw)
	t.Logf("%d connections relayed, accept paused: %+v", len(conns), readStats(t, gw))

	// Every held connection relays 256 KiB each way at the same time:
	// more pipes than there are file descriptors for.
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	for _, c := range conns {
		msg := make([]byte, 256<<10)
		rand.Read(msg)
		wg.Go(func() { errs <- <-echoAsync(c, msg) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a held connection stopped relaying at the open-file limit: %v", err)
		}
	}
	st := readStats(t, gw)
	if !st.AcceptPaused {
		t.Fatalf("accept no longer paused while every fd is in use: %+v", st)
	}
	for _, echoed := range waitingEcho {
		select {
		case err := <-echoed:
			t.Fatalf("a connection waiting for an fd was served while every fd was in use: %v", err)
		default:
		}
	}

	// Closing a few connections frees their fds: the waiting ones are served.
	for _, c := range conns[:4] {
		c.Close()
	}
	conns = append(conns[4:], waiting...)
	for i, echoed := range waitingEcho {
		select {
		case err := <-echoed:
			if err != nil {
				t.Fatalf("waiting connection %d, once fds were freed: %v", i+1, err)
			}
		case <-time.After(idleWait):
			t.Fatalf("waiting connection %d was not served %s after fds were freed", i+1, idleWait)
		}
	}
	waitUntil(t, "accept to resume", func() bool { return !readStats(t, gw).AcceptPaused })
	if n := strings.Count(gw.output(), outOfFDsLog); n != 1 {
		t.Errorf("%q logged %d times, want once per episode:\n%s", outOfFDsLog, n, gw.output())
	}
	if !strings.Contains(gw.output(), "accepting again") {
		t.Errorf("no log line says accepting resumed:\n%s", gw.output())
	}
}

// echoAsync writes msg to c and reports on the channel whether the same
// bytes came back.
func echoAsync(c net.Conn, msg []byte) chan error {
	done := make(chan error, 1)
	c.SetDeadline(time.Now().Add(2 * idleWait))
	go func() {
		wrote := make(chan error, 1)
		go func() {
			_, err := c.Write(msg)
			wrote <- err
		}()
		got := make([]byte, len(msg))
		_, err := io.ReadFull(c, got)
		if werr := <-wrote; err == nil {
			err = werr
		}
		if err == nil && !bytes.Equal(got, msg) {
			err = io.ErrUnexpectedEOF
		}
		done <- err
	}()
	return done
}

// readStats returns the last Stats the gateway process printed.
func readStats(t *testing.T, c *child) eastwest.Stats {
	t.Helper()
	out := c.output()
	i := strings.LastIndex(out, "\nstats ")
	if i < 0 {
		return eastwest.Stats{}
	}
	line, _, _ := strings.Cut(out[i+len("\nstats "):], "\n")
	var st eastwest.Stats
	if err := json.Unmarshal([]byte(line), &st); err != nil {
		t.Fatalf("the gateway's stats line %q: %v", line, err)
	}
	return st
}

// waitUntil polls cond until it holds or idleWait passes.
func waitUntil(t *testing.T, what string, cond func() bool, gw ...*child) {
	t.Helper()
	for deadline := time.Now().Add(idleWait); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			if len(gw) > 0 {
				t.Logf("gateway output:\n%s", gw[0].output())
			}
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
