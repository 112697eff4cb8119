package eastwest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/federate/federate/eastwest/sni"
)

// relayed is one client connection and, once connected, its upstream.
type relayed struct {
	g        *Gateway
	wg       *sync.WaitGroup // counts each half until it ends, parked or not
	client   socket
	upstream atomic.Pointer[socket]
	left     atomic.Int32 // directions still copying
	closed   atomic.Bool
	started  atomic.Bool // halves are set: close and the sweeper may read them
	halves   [2]half     // to upstream, to client
}

// half is one direction of a relayed connection.
type half struct {
	r        *relayed
	dst, src socket
	bytes    *atomic.Uint64

	// What the parker (park_linux.go) needs.
	moved   atomic.Uint64 // reads that returned bytes
	waiting atomic.Bool   // waiting for src to be readable
	kicked  atomic.Bool   // asked to park
	state   atomic.Int32  // halfRunning or halfParked
	seen    uint64        // moved at the last sweep, the sweeper's own
	// When a goroutine last took the direction over, since the parker's
	// epoch, and whether it is in the parker's fresh list; under its
	// freshMu.
	heldSince time.Duration
	listed    bool
	token     uint64 // its key in the parker, while parked
}

// close closes both connections and ends the halves that are parked.
func (r *relayed) close() {
	r.closed.Store(true)
	for i := range r.halves {
		if h := &r.halves[i]; r.started.Load() && r.g.parker.claim(h) {
			r.g.endHalf(h)
		}
	}
	r.client.Close()
	if u := r.upstream.Load(); u != nil {
		(*u).Close()
	}
}

// serveConn routes one client connection and starts its relay; wg counts
// the relay's goroutines.
func (g *Gateway) serveConn(ctx context.Context, client socket, wg *sync.WaitGroup) {
	r := &relayed{g: g, wg: wg, client: client}
	// Closing ends every phase: the hello read, the relay.
	if !g.conns.add(r) {
		r.close() // the drain ended
	}
	upstream, ok := g.connect(ctx, client)
	if !ok {
		g.conns.remove(r)
		client.Close()
		g.stats.active.Add(-1)
		return
	}
	r.upstream.Store(&upstream)
	r.halves[0] = half{r: r, dst: upstream, src: client, bytes: &g.stats.bytesToUpstream}
	r.halves[1] = half{r: r, dst: client, src: upstream, bytes: &g.stats.bytesToClient}
	r.started.Store(true)
	if r.closed.Load() {
		r.close() // a drain that came before the upstream was set
	}
	// This worker relays one direction, another the other. An idle
	// direction parks and gives its worker back.
	r.left.Store(2)
	g.parker.took(&r.halves[0], &r.halves[1])
	wg.Add(2)
	g.work.run(func() { g.copyHalf(&r.halves[1]) })
	g.copyHalf(&r.halves[0])
}

// copyHalf relays one direction. When src ends, dst's write half is
// closed and the other direction goes on; an error ends both. A direction
// that parks leaves its end to whoever resumes or closes it.
func (g *Gateway) copyHalf(h *half) {
	parked, err := copyConn(h, g.parker)
	if parked {
		return
	}
	if err != nil {
		h.r.close()
	}
	g.endHalf(h)
}

// endWrite passes the end of h's source on to its destination (a FIN).
// The last direction's FIN is sent here too, not by the close: the closer
// closes the sockets of a connection that ended cleanly later, in a
// batch. That FIN's failure is not the connection's: its peer reset it
// already, and its sockets are closed next anyway.
func endWrite(h *half) error {
	err := closeWrite(h.dst)
	if h.r.left.Load() == 1 {
		return nil
	}
	return err
}

// endHalf counts a direction's end; the last one closes the connection.
func (g *Gateway) endHalf(h *half) {
	r := h.r
	if r.left.Add(-1) == 0 {
		g.conns.remove(r)
		if r.closed.Swap(true) {
			r.close() // ended by an error or the drain
		} else {
			g.closer.later(r.client, *r.upstream.Load())
		}
		g.stats.active.Add(-1)
	}
	r.wg.Done()
}

// connect reads the ClientHello, routes it and connects to an upstream
// that has received the hello (and whatever the client sent after it). It counts and logs a refusal and returns
// false; the caller closes the client.
func (g *Gateway) connect(ctx context.Context, client socket) (socket, bool) {
	var h helloRead
	defer h.release()
	if err := g.readHello(client, &h); err != nil {
		g.refuse(client, refusalFor(err, h.n), "", err)
		return nil, false
	}
	hello := h.hello
	if hello.ServerName == "" {
		g.refuse(client, RefusedNoSNI, "", nil)
		return nil, false
	}
	route, err := g.cfg.Router.Route(hello.ServerName)
	if err != nil {
		reason := RefusedRouteError
		if errors.Is(err, ErrNoRoute) {
			reason = RefusedUnknownSNI
		}
		g.refuse(client, reason, hello.ServerName, err)
		return nil, false
	}
	upstream, err := g.dial(ctx, route.Endpoints, h.bytes())
	if err != nil {
		reason := RefusedNoUpstream
		if resourceExhausted(err) {
			reason = RefusedFDLimit
		}
		g.refuse(client, reason, hello.ServerName, err)
		return nil, false
	}
	g.stats.bytesToUpstream.Add(uint64(h.n))
	g.stats.relayed.Add(1)
	return upstream, true
}

// refusalFor classifies an error from readHello after n bytes.
func refusalFor(err error, n int) Refusal {
	switch {
	case n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		return RefusedNoData
	case errors.Is(err, os.ErrDeadlineExceeded):
		return RefusedHelloTimeout
	case errors.Is(err, sni.ErrTooLarge):
		return RefusedHelloTooLarge
	case errors.Is(err, sni.ErrNotTLS), errors.Is(err, sni.ErrSSLv2), errors.Is(err, sni.ErrRecordType):
		return RefusedNotTLS
	case errors.Is(err, sni.ErrNotClientHello), errors.Is(err, sni.ErrBadLength), errors.Is(err, sni.ErrTruncated),
		errors.Is(err, sni.ErrDuplicateExtension), errors.Is(err, sni.ErrBadServerName):
		return RefusedBadHello
	default: // EOF, reset, closed by the drain
		return RefusedHelloIncomplete
	}
}

// refuse counts a refusal; the caller closes the connection.
func (g *Gateway) refuse(c socket, r Refusal, serverName string, err error) {
	g.stats.refused[r].Add(1)
	// The client's address costs a system call: only when logged.
	if g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.Debug("refused", "reason", r, "client", peerAddr(c), "sni", serverName, "err", err)
	}
}
