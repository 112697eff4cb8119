package eastwest

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/eastwest/internal/tlstest"
)

// A direction waits for the poller inside one RawConn.Read, which keeps
// the readiness the poller saw. Were a wake-up lost (a piece that came
// while the direction wrote the one before, and nothing after it), the
// direction would sit still until the sweeper kicked it a second or two
// later and parked it. Pairs of pieces sent back to back, each pair
// waiting for its echo, make that case again and again.
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

// A FIN that comes right behind the last bytes may arrive before the
// gateway reads them, and its wake-up is spent with theirs: the read that
// takes the bytes must not be the last before a wait, or the FIN waits
// for the sweeper to find the direction idle and park it. Both ends here
// send their last piece and their FIN back to back, on many connections
// at once (fewer than crowd the parker).
func TestGatewayPassesOnAFINRightBehindTheBytes(t *testing.T) {
	const conns, rounds = 32, 4
	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer lis.Close()
	wg.Go(func() { // answers each connection's bytes with "bye" and its FIN
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(waitTimeout))
				if _, err := io.Copy(io.Discard, c); err != nil {
					return
				}
				c.Write([]byte("bye"))
				c.(*net.TCPConn).CloseWrite()
			})
		}
	})
	gw := startGateway(t, Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{lis.Addr().String()}}}})
	hello := tlstest.ClientHello(t, &tls.Config{ServerName: reviewsSNI})
	start := time.Now()
	for range rounds {
		var clients sync.WaitGroup
		errs := make(chan error, conns)
		for range conns {
			clients.Go(func() {
				c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(gw.addr)))
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(waitTimeout))
				if _, err := c.Write(hello); err != nil {
					errs <- err
					return
				}
				c.Write([]byte("last piece"))
				c.CloseWrite()
				if got, err := io.ReadAll(c); err != nil || string(got) != "bye" {
					errs <- fmt.Errorf("read %q, %v; want bye and the FIN", got, err)
				}
			})
		}
		clients.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	if st := gw.Stats(); st.Parks != 0 {
		t.Fatalf("%d directions parked on the way to their FIN (%d connections in %s): a FIN waited for the sweeper",
			st.Parks, conns*rounds, time.Since(start).Round(time.Millisecond))
	}
}
