package eastwest

import (
	"bufio"
	"crypto/tls"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// relayGoroutines counts the goroutines copying a direction.
func relayGoroutines() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "eastwest.(*Gateway).copyHalf(")
}

// Idle connections give up their goroutines, and wake up when either side
// sends, closes, or the gateway drains.
func TestGatewayParksIdleConnections(t *testing.T) {
	const conns = 12
	push := make(chan struct{})
	b := startBackend(t, reviewsSNI, nil, func(c *tls.Conn, raw *net.TCPConn) {
		raw.SetDeadline(time.Time{}) // idles longer than the backend's default
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if line == "push\n" {
				select {
				case <-push:
				case <-time.After(waitTimeout):
					return
				}
				line = "pushed\n"
			}
			if _, err := c.Write([]byte(reviewsSNI + " " + line)); err != nil {
				return
			}
		}
	})
	gw := startGateway(t, Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{b.addr}}}, DrainTimeout: 200 * time.Millisecond})

	var clients []*tls.Conn
	for range conns {
		c, err := dialTLS(t, gw.addr, reviewsSNI, &tls.Config{RootCAs: b.roots}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(time.Minute))
		clients = append(clients, c)
		if got, want := ask(t, c, "ping\n"), reviewsSNI+" ping\n"; got != want {
			t.Fatalf("reply %q, want %q", got, want)
		}
	}
	parked := func() bool { return relayGoroutines() == 0 }
	eventually(t, "every idle direction to park", parked)
	if st := gw.Stats(); st.Active != conns || st.Parked != 2*conns {
		t.Fatalf("%d connections active and %d directions parked, want %d and %d", st.Active, st.Parked, conns, 2*conns)
	}

	// The client speaks first: its direction wakes, and the reply comes.
	for _, c := range clients {
		if got, want := ask(t, c, "ping again\n"), reviewsSNI+" ping again\n"; got != want {
			t.Fatalf("after parking: reply %q, want %q", got, want)
		}
	}
	eventually(t, "the directions to park again", parked)

	// The upstream speaks while both directions are parked.
	c := clients[0]
	if _, err := c.Write([]byte("push\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the directions to park while the backend holds its reply", parked)
	close(push)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != reviewsSNI+" pushed\n" {
		t.Fatalf("the upstream's reply to a parked connection: %q, %v", line, err)
	}

	// A client that closes a parked connection ends it.
	eventually(t, "the directions to park again", parked)
	for _, c := range clients[:conns/2] {
		c.Close()
	}
	eventually(t, "the closed connections to end", func() bool { return gw.Stats().Active == conns/2 })

	// The drain closes the rest, parked as they are.
	eventually(t, "the directions to park again", parked)
	if err := gw.stop(); err != nil {
		t.Fatal(err)
	}
	if st := gw.Stats(); st.Active != 0 || st.Parked != 0 {
		t.Fatalf("%d connections active and %d directions parked after the drain", st.Active, st.Parked)
	}
}

// Once pollerBudget fresh directions hold a goroutine, the sweeper
// hurries: idle directions park within two parkCrowdedAfter, not two
// parkIdleAfter, so that a burst of connections does not hold a goroutine
// per direction for a second or two.
func TestGatewayParksSoonerWhenCrowded(t *testing.T) {
	const conns = pollerBudget/2 + 20
	b := startBackend(t, reviewsSNI, nil, func(c *tls.Conn, raw *net.TCPConn) {
		raw.SetDeadline(time.Time{})
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := c.Write([]byte(reviewsSNI + " " + line)); err != nil {
				return
			}
		}
	})
	gw := startGateway(t, Config{Router: staticRouter{reviewsSNI: {Endpoints: []string{b.addr}}}, DrainTimeout: 200 * time.Millisecond})
	var clients []*tls.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range conns {
		c, err := dialTLS(t, gw.addr, reviewsSNI, &tls.Config{RootCAs: b.roots}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(time.Minute))
		clients = append(clients, c)
	}
	// All parked, every connection wakes, moves bytes and idles again.
	eventually(t, "every idle direction to park", func() bool { return gw.Stats().Parked == 2*conns })
	for _, c := range clients {
		if got, want := ask(t, c, "ping\n"), reviewsSNI+" ping\n"; got != want {
			t.Fatalf("reply %q, want %q", got, want)
		}
	}
	idle := time.Now()
	eventually(t, "every idle direction to park", func() bool { return gw.Stats().Parked == 2*conns })
	took := time.Since(idle)
	t.Logf("%d directions parked %s after they idled", 2*conns, took)
	// Uncrowded, the first sweep after the pings only notes them, and the
	// next one, parkIdleAfter later, parks.
	if limit := parkIdleAfter / 2; took >= limit {
		t.Fatalf("%d directions holding goroutines parked %s after they idled, not within %s: the crowded poller did not hurry the sweeper", 2*conns, took, limit)
	}
}

// The fresh list holds each direction once, hurries the sweeper at
// pollerBudget, and lets go of directions parked, closed, or holding
// their goroutine for parkIdleAfter: busy connections never keep the
// sweeper hurried.
func TestFreshDirectionsAreYoungAndRunning(t *testing.T) {
	p := &parker{epoch: time.Now(), hurry: make(chan struct{}, 1)}
	var hs []*half
	for range pollerBudget / 2 {
		r := &relayed{}
		for i := range r.halves {
			r.halves[i].r = r
			hs = append(hs, &r.halves[i])
		}
	}
	p.took(hs[:len(hs)-1]...)
	select {
	case <-p.hurry:
		t.Fatalf("hurried at %d fresh directions, below the budget of %d", len(hs)-1, pollerBudget)
	default:
	}
	p.took(hs...)
	select {
	case <-p.hurry:
	default:
		t.Fatalf("not hurried at %d fresh directions", len(hs))
	}
	if got := len(p.pruneFresh()); got != len(hs) {
		t.Fatalf("%d fresh directions listed, want %d: each once", got, len(hs))
	}
	hs[0].state.Store(halfParked)
	hs[2].r.closed.Store(true) // hs[2] and hs[3]
	hs[4].heldSince -= parkIdleAfter
	if got, want := len(p.pruneFresh()), len(hs)-4; got != want {
		t.Fatalf("%d fresh directions after one parked, a connection closed and one held for %s; want %d", got, parkIdleAfter, want)
	}
	p.took(hs[4]) // it woke again
	if got, want := len(p.pruneFresh()), len(hs)-3; got != want {
		t.Fatalf("%d fresh directions after one woke again, want %d", got, want)
	}

	// A stream of short connections leaves the directions of ended ones
	// listed until a prune: they must not crowd the parker.
	for _, h := range hs {
		h.r.closed.Store(true)
	}
	for range pollerBudget {
		r := &relayed{}
		r.halves[0].r, r.halves[1].r = r, r
		p.took(&r.halves[0], &r.halves[1])
		r.closed.Store(true) // the connection ended
	}
	select {
	case <-p.hurry:
		t.Fatalf("hurried by the directions of %d ended connections", pollerBudget)
	default:
	}
}
