package eastwest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// Defaults for Config.
const (
	DefaultListen          = ":15443"
	DefaultHelloTimeout    = 10 * time.Second
	DefaultConnectTimeout  = 5 * time.Second
	DefaultConnectAttempts = 3
	DefaultDrainTimeout    = 30 * time.Second

	DefaultConsecutiveFailures = 5
	DefaultEjectionTime        = 30 * time.Second
)

// Config configures a Gateway. Zero fields take the defaults above.
type Config struct {
	// Router decides where each server name goes. Required.
	Router Router
	// Listen is the address Run listens on.
	Listen string
	// HelloTimeout bounds the time from accept until the whole ClientHello
	// has arrived; a slower client is cut off.
	HelloTimeout time.Duration
	// ConnectTimeout bounds each connect to an upstream endpoint.
	ConnectTimeout time.Duration
	// ConnectAttempts is how many endpoints one connection tries before it
	// is refused.
	ConnectAttempts int
	// DrainTimeout is how long established connections may go on after
	// the gateway stops accepting; then they are closed.
	DrainTimeout time.Duration
	// ReturnMemoryEvery is the least time between two returns of memory
	// to the OS during a burst of connections. Every second the gateway
	// checks whether 512 or more connections closed, or 512 directions of
	// idle connections parked, since the last return, or 64 MiB of heap
	// lie free; or whether a burst of 64 or more of those ended: then it
	// calls debug.FreeOSMemory (which affects the whole process). A burst
	// that had a return in its middle gets one more at its end, however
	// soon. Negative turns it off.
	ReturnMemoryEvery time.Duration
	// Outlier configures passive ejection of endpoints that fail to connect.
	Outlier OutlierConfig
	Logger  *slog.Logger
	// Now is the clock for outlier ejection; deadlines use the system clock.
	Now func() time.Time
}

// OutlierConfig configures passive outlier ejection.
type OutlierConfig struct {
	// ConsecutiveFailures is how many connects in a row must fail to eject
	// an endpoint.
	ConsecutiveFailures int
	// EjectionTime is how long an ejected endpoint is skipped, unless every
	// endpoint of a route is ejected: then they are all tried.
	EjectionTime time.Duration
}

// Gateway is the east-west gateway's data plane: it accepts TLS
// connections, reads the ClientHello without consuming it, routes by SNI
// and relays the bytes untouched to an upstream, using splice(2) on Linux.
// It never terminates TLS and refuses any name its Router does not route.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	dialer   net.Dialer
	outliers *outliers
	stats    counters
	conns    liveConns
	closer   closer
	work     *workers // nil while not serving
	parker   *parker  // nil while not serving, or if the kernel refused one
}

// New checks cfg and returns a gateway; it does no I/O.
func New(cfg Config) (*Gateway, error) {
	if cfg.Router == nil {
		return nil, ErrNoRouter
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = DefaultHelloTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.ConnectAttempts <= 0 {
		cfg.ConnectAttempts = DefaultConnectAttempts
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.ReturnMemoryEvery == 0 {
		cfg.ReturnMemoryEvery = DefaultReturnMemoryEvery
	}
	if cfg.Outlier.ConsecutiveFailures <= 0 {
		cfg.Outlier.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if cfg.Outlier.EjectionTime <= 0 {
		cfg.Outlier.EjectionTime = DefaultEjectionTime
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Gateway{
		cfg: cfg,
		log: cfg.Logger.With("component", "eastwest-gateway"),
		// No TCP keepalive on relayed connections, as HAProxy and Envoy
		// by default: its setsockopt calls would cost every connection,
		// and the endpoints run their own.
		dialer:   net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: -1},
		outliers: newOutliers(cfg.Outlier, cfg.Now),
		closer:   closer{within: closeWithin},
	}, nil
}

// Stats returns a snapshot of the gateway's counters.
func (g *Gateway) Stats() Stats { return g.stats.snapshot() }

// Run listens on Config.Listen and serves until ctx is done.
func (g *Gateway) Run(ctx context.Context) error {
	lis, err := Listen(ctx, g.cfg.Listen)
	if err != nil {
		return err
	}
	return g.Serve(ctx, lis)
}

// Listen opens a gateway listener on addr: accepted connections get no
// TCP keepalive, like the gateway's upstream connections, and on Linux
// are accepted only once their first bytes arrived (TCP_DEFER_ACCEPT).
func Listen(ctx context.Context, addr string) (*net.TCPListener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = deferAccept(fd) }); cerr != nil {
			return cerr
		}
		return err
	}}
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("eastwest: listen on %s: %w", addr, err)
	}
	return lis.(*net.TCPListener), nil
}

// Serve accepts connections on lis until ctx is done, then drains: it
// closes lis, lets established connections finish for up to
// Config.DrainTimeout, closes the rest and returns once every goroutine it
// started has stopped. It returns nil when ctx ended it, and the accept
// error otherwise. Serve owns lis.
func (g *Gateway) Serve(ctx context.Context, lis *net.TCPListener) error {
	// Before its first table a router knows no name; peers that dial the
	// gateway as soon as it listens are held in the backlog meanwhile.
	if r, ok := g.cfg.Router.(interface{ Loaded() <-chan struct{} }); ok {
		select {
		case <-r.Loaded():
		case <-ctx.Done():
			lis.Close()
			return nil
		}
	}
	// Connections outlive ctx by the drain; closing is how they end early.
	// connCtx ends the dials under way; closing each connection ends
	// the rest.
	connCtx, cancelConns := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelConns()
	closeConns := func() {
		cancelConns()
		g.conns.closeAll()
	}
	stopListening := context.AfterFunc(ctx, func() { lis.Close() })
	defer stopListening()

	var wg sync.WaitGroup
	defer g.closer.flush() // the last connections' sockets, once drained
	g.work = newWorkers()
	// Every task has ended once the drain is over (wg counts them).
	defer g.work.stop()
	g.parker = newParker(g.log, &g.conns)
	if g.parker != nil {
		go g.parker.run(func(h *half) { g.work.run(func() { g.copyHalf(h) }) })
		// Stopped once every connection ended: parked ones resume until then.
		defer g.parker.stop()
	}
	memCtx, stopReturningMemory := context.WithCancel(ctx)
	defer stopReturningMemory()
	if g.cfg.ReturnMemoryEvery > 0 {
		wg.Go(func() { g.returnMemory(memCtx, g.cfg.ReturnMemoryEvery) })
	}
	err := g.accept(ctx, lis, func(c socket) {
		wg.Add(1)
		g.work.run(func() {
			defer wg.Done()
			g.serveConn(connCtx, c, &wg)
		})
	})
	lis.Close()
	stopReturningMemory()

	drained := make(chan struct{})
	go func() {
		wg.Wait()
		close(drained)
	}()
	drain := time.NewTimer(g.cfg.DrainTimeout)
	defer drain.Stop()
	select {
	case <-drained:
	case <-drain.C:
		g.log.Info("drain timeout: closing connections", "active", g.stats.active.Load())
		closeConns()
		<-drained
	}
	return err
}
