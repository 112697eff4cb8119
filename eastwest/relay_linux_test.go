package eastwest

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/eastwest/internal/tlstest"
)

// A direction that drained its source waits for the poller without
// reading EAGAIN first, which is safe only while Go's poller keeps the
// readiness it saw (within one RawConn.Read). Were a wake-up lost (a
// piece that came while the direction wrote the one before, and nothing
// after it), the direction would sit still until the sweeper kicked it a
// second or two later and parked it. Pairs of pieces sent back to back,
// each pair waiting for its echo, make that case again and again.
func TestGatewayRelaysPiecesThatComeWhileItWrites(t *testing.T) {
	const pairs, size = 400, 100
	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer lis.Close()
	wg.Go(func() { // echoes each piece as it reads it
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(waitTimeout))
		buf := make([]byte, size)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	})
	gw := startGateway(t, Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{lis.Addr().String()}}}})
	hello := tlstest.ClientHello(t, &tls.Config{ServerName: reviewsSNI})
	c := dialTCP(t, gw.addr)
	defer c.Close() // before wg.Wait: the backend reads until it closes
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, len(hello))); err != nil {
		t.Fatalf("the hello's echo: %v", err)
	}
	echo := make([]byte, 2*size)
	start := time.Now()
	pair := make([]byte, 2*size)
	for i := range pairs {
		for j := range pair {
			pair[j] = byte(i + j)
		}
		// Two writes, two segments (TCP_NODELAY): the second often
		// arrives while the gateway writes the first.
		if _, err := c.Write(pair[:size]); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(pair[size:]); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, echo); err != nil {
			t.Fatalf("pair %d: %v", i, err)
		}
		if !bytes.Equal(echo, pair) {
			t.Fatalf("pair %d came back changed", i)
		}
	}
	took := time.Since(start)
	if st := gw.Stats(); st.Parks != 0 {
		t.Fatalf("%d directions parked while %d pairs went back and forth (%s): a wake-up was lost", st.Parks, pairs, took)
	}
	t.Logf("%d pairs of %d-byte pieces echoed in %s", pairs, size, took.Round(time.Millisecond))
}
