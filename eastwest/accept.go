package eastwest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// Accept backs off as net/http's server does when the process runs out of
// file descriptors (or kernel memory): the pending connections wait in the
// listen backlog while established ones go on, and accepting resumes as
// soon as connections close.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// accept hands each accepted connection to handle until lis fails or ctx
// is done.
func (g *Gateway) accept(ctx context.Context, lis *net.TCPListener, handle func(socket)) error {
	var backoff time.Duration
	var pausedAt time.Time
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	defer wait.Stop()
	next, stop, err := acceptor(lis)
	if err != nil {
		if ctx.Err() != nil {
			return nil // lis closed already
		}
		return fmt.Errorf("eastwest: accept: %w", err)
	}
	defer stop()
	defer context.AfterFunc(ctx, stop)()
	for {
		c, err := next()
		if err == nil {
			if backoff > 0 {
				backoff = 0
				g.stats.acceptPaused.Store(false)
				g.log.Info("accepting again", "paused_for", time.Since(pausedAt).Round(time.Millisecond))
			}
			g.stats.accepted.Add(1)
			// Only this goroutine raises the peak: no compare-and-swap.
			if active := g.stats.active.Add(1); active > g.stats.peakActive.Load() {
				g.stats.peakActive.Store(active)
			}
			handle(c)
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if !resourceExhausted(err) {
			return fmt.Errorf("eastwest: accept: %w", err)
		}
		g.stats.acceptBackoffs.Add(1)
		g.closer.flush() // its sockets are descriptors too
		if backoff == 0 {
			// One line per episode, not one per retry: a full process
			// would otherwise log dozens of lines a second.
			pausedAt = time.Now()
			g.stats.acceptPaused.Store(true)
			g.log.Warn("out of file descriptors: new connections wait in the listen backlog until some close; raise the open-file limit (ulimit -n, LimitNOFILE) if this repeats",
				"err", err, "active", g.stats.active.Load())
		}
		backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
		wait.Reset(backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-wait.C:
		}
	}
}

// resourceExhausted reports errors that running out of file descriptors or
// kernel memory causes: they pass once connections close.
func resourceExhausted(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}
