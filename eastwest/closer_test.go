package eastwest

import (
	"crypto/tls"
	"io"
	"os"
	"testing"
	"time"

	"github.com/federate/federate/eastwest/internal/tlstest"
)

// closed reports whether s was closed: on an open pipe or socket,
// clearing the deadline cannot fail.
func closed(s socket) bool {
	return s.SetReadDeadline(time.Time{}) != nil
}

// pipeSockets returns n open files that pass for sockets.
func pipeSockets(t *testing.T, n int) []socket {
	t.Helper()
	var s []socket
	for len(s) < n {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		s = append(s, r, w)
	}
	return s
}

func TestCloserClosesInBatchesOrWithinItsTime(t *testing.T) {
	c := &closer{within: time.Hour}
	batch := pipeSockets(t, closeBatch)
	for i := 0; i+2 < len(batch); i += 2 {
		c.later(batch[i], batch[i+1])
	}
	for i, s := range batch[:len(batch)-2] {
		if closed(s) {
			t.Fatalf("socket %d of %d closed before the batch was full", i, len(batch)-2)
		}
	}
	c.later(batch[len(batch)-2:]...)
	for i, s := range batch {
		if !closed(s) {
			t.Fatalf("socket %d still open once the batch was full", i)
		}
	}

	flushed := pipeSockets(t, 2)
	c.later(flushed...)
	c.flush()
	if !closed(flushed[0]) || !closed(flushed[1]) {
		t.Fatal("flush left sockets open")
	}

	c.within = 10 * time.Millisecond // the timer is stopped: no flush reads it
	late := pipeSockets(t, 2)
	c.later(late...)
	eventually(t, "the sockets of a batch that never filled to close", func() bool {
		return closed(late[0]) && closed(late[1])
	})
}

// A connection that ended cleanly waits for the closer, but its client
// and its upstream have their FINs at once: the last direction to end
// sends its FIN itself instead of leaving it to the close.
func TestGatewaySendsTheLastFINBeforeTheClose(t *testing.T) {
	upstream := startTCPBackend(t, answerByeAtTheEnd)
	cfg := Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{upstream}}}, Logger: testLogger(t)}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.closer.within = time.Hour
	gw := serveGateway(t, g)

	c := dialTCP(t, gw.addr)
	defer c.Close()
	if _, err := c.Write(tlstest.ClientHello(t, &tls.Config{ServerName: reviewsSNI})); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("read %q, %v; want bye and the gateway's FIN", got, err)
	}

	var waiting []socket
	eventually(t, "the connection's sockets to wait for the closer", func() bool {
		g.closer.mu.Lock()
		defer g.closer.mu.Unlock()
		waiting = append([]socket(nil), g.closer.pending...)
		return len(waiting) == 2
	})
	if closed(waiting[0]) || closed(waiting[1]) {
		t.Fatal("a socket waiting for the closer is closed already")
	}
	if err := gw.stop(); err != nil {
		t.Fatal(err)
	}
	if !closed(waiting[0]) || !closed(waiting[1]) {
		t.Fatal("Serve returned with sockets still waiting to be closed")
	}
}
