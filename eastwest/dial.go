package eastwest

import (
	"context"
	"io"
	"net"
	"syscall"
	"time"
)

// socket is one end of a relayed connection: a *net.TCPConn, or on Linux
// an upstream the gateway connected itself (an *os.File on Go's poller).
type socket interface {
	io.ReadWriteCloser
	SyscallConn() (syscall.RawConn, error)
	SetReadDeadline(time.Time) error
}

// closeWrite sends s's FIN (shutdown SHUT_WR); reads go on.
func closeWrite(s socket) error {
	if c, ok := s.(*net.TCPConn); ok {
		return c.CloseWrite()
	}
	return shutdownWrite(s)
}

// dial connects to the first endpoint that accepts and takes first (the
// hello), trying at most ConnectAttempts of them and skipping ejected
// ones, unless all are.
func (g *Gateway) dial(ctx context.Context, endpoints []string, first []byte) (socket, error) {
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
		c, derr := g.dialWaitingForFDs(ctx, addr, first)
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

// dialWaitingForFDs connects to addr and sends first. When the process is
// out of file descriptors it tries again, backing off as accept does, for
// up to ConnectTimeout: the accepted client waits for a descriptor to
// free up rather than being refused.
func (g *Gateway) dialWaitingForFDs(ctx context.Context, addr string, first []byte) (socket, error) {
	deadline := time.Now().Add(g.cfg.ConnectTimeout)
	var backoff time.Duration
	for {
		c, err := g.connectAndSend(ctx, addr, first)
		if err == nil {
			return c, nil
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

// dialAndSend connects with net.Dialer (names, not only addresses) and
// sends first.
func (g *Gateway) dialAndSend(ctx context.Context, addr string, first []byte) (socket, error) {
	c, err := g.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// A few kilobytes fit the socket buffer of a fresh connection; the
	// deadline only guards against an upstream that accepts and stalls.
	c.SetWriteDeadline(time.Now().Add(g.cfg.ConnectTimeout))
	if _, err := c.Write(first); err != nil {
		c.Close()
		return nil, err
	}
	c.SetWriteDeadline(time.Time{})
	return c.(*net.TCPConn), nil
}
