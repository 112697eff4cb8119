package eastwest

import (
	"context"
	"errors"
	"io"
	"net"
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
	client   *net.TCPConn
	upstream atomic.Pointer[net.TCPConn]
	left     atomic.Int32 // directions still copying
	closed   atomic.Bool
	started  atomic.Bool // halves are set: close and the sweeper may read them
	halves   [2]half     // to upstream, to client
}

// half is one direction of a relayed connection.
type half struct {
	r        *relayed
	dst, src *net.TCPConn
	bytes    *atomic.Uint64

	// What the parker (park_linux.go) needs.
	moved   atomic.Uint64 // reads that returned bytes
	waiting atomic.Bool   // waiting for src to be readable
	kicked  atomic.Bool   // asked to park
	state   atomic.Int32  // halfRunning or halfParked
	seen    uint64        // moved at the last sweep, the sweeper's own
	token   uint64        // its key in the parker, while parked
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
		u.Close()
	}
}

// serveConn routes one client connection and starts its relay; wg counts
// the relay's goroutines.
func (g *Gateway) serveConn(ctx context.Context, client *net.TCPConn, wg *sync.WaitGroup) {
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
	r.upstream.Store(upstream)
	r.halves[0] = half{r: r, dst: upstream, src: client, bytes: &g.stats.bytesToUpstream}
	r.halves[1] = half{r: r, dst: client, src: upstream, bytes: &g.stats.bytesToClient}
	r.started.Store(true)
	if r.closed.Load() {
		r.close() // a drain that came before the upstream was set
	}
	// This worker relays one direction, another the other. An idle
	// direction parks and gives its worker back.
	r.left.Store(2)
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

// endHalf counts a direction's end; the last one closes the connection.
func (g *Gateway) endHalf(h *half) {
	r := h.r
	if r.left.Add(-1) == 0 {
		g.conns.remove(r)
		r.close()
		g.stats.active.Add(-1)
	}
	r.wg.Done()
}

// connect reads the ClientHello, routes it and connects to an upstream
// that has received the hello. It counts and logs a refusal and returns
// false; the caller closes the client.
func (g *Gateway) connect(ctx context.Context, client *net.TCPConn) (*net.TCPConn, bool) {
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
	upstream, err := g.dial(ctx, route.Endpoints)
	if err != nil {
		reason := RefusedNoUpstream
		if resourceExhausted(err) {
			reason = RefusedFDLimit
		}
		g.refuse(client, reason, hello.ServerName, err)
		return nil, false
	}
	// A few kilobytes fit the socket buffer of a fresh connection; the
	// deadline only guards against an upstream that accepts and stalls.
	upstream.SetWriteDeadline(time.Now().Add(g.cfg.ConnectTimeout))
	if _, err := upstream.Write(h.bytes()); err != nil {
		upstream.Close()
		g.refuse(client, RefusedNoUpstream, hello.ServerName, err)
		return nil, false
	}
	upstream.SetWriteDeadline(time.Time{})
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
func (g *Gateway) refuse(c *net.TCPConn, r Refusal, serverName string, err error) {
	g.stats.refused[r].Add(1)
	g.log.Debug("refused", "reason", r, "client", c.RemoteAddr(), "sni", serverName, "err", err)
}

// dial connects to the first endpoint that accepts, trying at most
// ConnectAttempts of them and skipping ejected ones, unless all are.
func (g *Gateway) dial(ctx context.Context, endpoints []string) (*net.TCPConn, error) {
	skipEjected := false
	for _, addr := range endpoints {
		if !g.outliers.ejected(addr) {
			skipEjected = true
			break
		}
	}
	attempts := 0
	err := errNoEndpoints
	for _, addr := range endpoints {
		if attempts == g.cfg.ConnectAttempts {
			break
		}
		if skipEjected && g.outliers.ejected(addr) {
			continue
		}
		attempts++
		c, derr := g.dialWaitingForFDs(ctx, addr)
		if derr == nil {
			g.outliers.succeeded(addr)
			return c, nil
		}
		if ctx.Err() != nil || resourceExhausted(derr) {
			// The drain or this process's own limits ended it, not the
			// endpoint: no outlier accounting.
			return nil, derr
		}
		err = derr
		g.stats.connectFailures.Add(1)
		if g.outliers.failed(addr) {
			g.stats.ejections.Add(1)
			g.log.Info("endpoint ejected", "endpoint", addr, "for", g.cfg.Outlier.EjectionTime, "err", derr)
		}
	}
	return nil, err
}

// dialWaitingForFDs connects to addr. When the process is out of file
// descriptors it tries again, backing off as accept does, for up to
// ConnectTimeout: the accepted client waits for a descriptor to free up
// rather than being refused.
func (g *Gateway) dialWaitingForFDs(ctx context.Context, addr string) (*net.TCPConn, error) {
	deadline := time.Now().Add(g.cfg.ConnectTimeout)
	var backoff time.Duration
	for {
		c, err := g.dialer.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.(*net.TCPConn), nil
		}
		backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
		if !resourceExhausted(err) || time.Now().Add(backoff).After(deadline) {
			return nil, err
		}
		wait := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			wait.Stop()
			return nil, err
		case <-wait.C:
		}
	}
}
