package eastwest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
	upstream := startTCPBackend(t, func(c *net.TCPConn) { // echoes each piece as it reads it
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
	gw := startGateway(t, Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{upstream}}}})
	hello := tlstest.ClientHello(t, &tls.Config{ServerName: reviewsSNI})
	c := dialTCP(t, gw.addr)
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
	upstream := startTCPBackend(t, answerByeAtTheEnd)
	gw := startGateway(t, Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{upstream}}}})
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

// A read says what it left: nothing, some bytes, or a FIN that waits
// behind the bytes (more than nothing, so the direction reads on), on the
// gateway's upstream sockets as on the ones it accepts.
func TestReaderSaysWhatItLeft(t *testing.T) {
	lis, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	g, err := New(Config{Router: staticRouter{}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	up, err := g.dial(context.Background(), []string{lis.Addr().String()}, []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	peer, err := lis.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if _, err := io.ReadFull(peer, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	raw, err := up.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var rd reader
	read := func(size int) (got string, left int) {
		t.Helper()
		buf := make([]byte, size)
		var n int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			n, left, rerr = rd.read(int(fd), buf)
			return rerr != syscall.EAGAIN
		}); err != nil || rerr != nil {
			t.Fatal(err, rerr)
		}
		return string(buf[:n]), left
	}
	send := func(s string) {
		t.Helper()
		if _, err := peer.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}

	send("abc")
	if got, left := read(16); got != "abc" || left != 0 {
		t.Fatalf("read %q leaving %d, want abc leaving 0", got, left)
	}
	send("abcdef")
	eventually(t, "the bytes to arrive", func() bool {
		var inq int
		raw.Control(func(fd uintptr) { inq, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		return inq == 6
	})
	if got, left := read(4); got != "abcd" || left != 2 {
		t.Fatalf("read %q leaving %d, want abcd leaving 2", got, left)
	}
	if got, left := read(16); got != "ef" || left != 0 {
		t.Fatalf("read %q leaving %d, want ef leaving 0", got, left)
	}
	send("z")
	peer.CloseWrite()
	eventually(t, "the FIN to arrive", func() bool {
		var state uint8
		raw.Control(func(fd uintptr) {
			if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				state = info.State
			}
		})
		return state == unix.BPF_TCP_CLOSE_WAIT
	})
	if got, left := read(16); got != "z" || left <= 0 {
		t.Fatalf("read %q leaving %d, want z and the FIN left", got, left)
	}
	if got, left := read(16); got != "" {
		t.Fatalf("read %q leaving %d, want the end", got, left)
	}
}
