// Package connguard bounds what a connection to the control plane's API
// may cost before it proves who it is: the TLS handshake has a deadline;
// connections without a client certificate (a VM agent trading its token)
// are few, live a few seconds and may send a few hundred KiB; and a
// connection without an open stream is closed after a short idle time. Every such close is counted by reason and
// logged once per peer.
package connguard

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"
)

// Defaults of Config.
const (
	DefaultHandshakeTimeout       = 5 * time.Second
	DefaultUnauthenticatedTimeout = 10 * time.Second
	DefaultIdleTimeout            = 30 * time.Second
	// A Bootstrap, the one call without a certificate, is a token and a
	// CSR: a few KiB.
	DefaultUnauthenticatedBytes = 256 << 10
	DefaultMaxUnauthenticated   = 64
	// relogAfter is how long a peer's refusals for one reason stay quiet
	// in the log after the first.
	relogAfter = 10 * time.Minute
	// maxLogged bounds the peers remembered for that.
	maxLogged = 4096
)

// Why the guard closed a connection, as the reason label says.
const (
	ReasonHandshakeTimeout    = "handshake_timeout"
	ReasonHandshakeFailed     = "handshake_failed"
	ReasonNoClientCertificate = "no_client_certificate"
	ReasonTooMuchData         = "unauthenticated_too_much_data"
	ReasonTooManyConnections  = "unauthenticated_too_many"
	ReasonNeverOpenedAStream  = "never_opened_a_stream"
	ReasonIdle                = "idle"
)

// Config configures a Guard; zero durations take the defaults.
type Config struct {
	// HandshakeTimeout bounds the TLS handshake and HTTP/2 preface.
	HandshakeTimeout time.Duration
	// UnauthenticatedTimeout is how long a connection without a client
	// certificate stays open: long enough for a token's one call.
	UnauthenticatedTimeout time.Duration
	// UnauthenticatedBytes bounds what a connection without a client
	// certificate may send in all; past it the connection is closed.
	// grpc-go reads a whole message, up to the server's one limit for
	// every caller, before any handler sees who sent it.
	UnauthenticatedBytes int64
	// MaxUnauthenticated bounds the connections without a client
	// certificate open at once; more are closed after their handshake.
	MaxUnauthenticated int
	// IdleTimeout closes a connection with no open stream, from its start
	// or its last stream's end (gRPC's MaxConnectionIdle, a GOAWAY
	// followed by the close).
	IdleTimeout time.Duration
	// Keepalive is the server's pings; its MaxConnectionIdle is replaced
	// by IdleTimeout.
	Keepalive keepalive.ServerParameters
	Logger    *slog.Logger
}

// Guard watches the connections of one gRPC server.
type Guard struct {
	cfg    Config
	log    *slog.Logger
	closed *prometheus.CounterVec
	open   *prometheus.Desc

	mu     sync.Mutex           // guards the fields below
	live   map[string]*conn     // by remote address
	unauth int                  // of live, those without a client certificate
	logged map[string]time.Time // peer host and reason -> when last logged
}

// New returns a Guard; it does no I/O.
func New(cfg Config) *Guard {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.UnauthenticatedTimeout <= 0 {
		cfg.UnauthenticatedTimeout = DefaultUnauthenticatedTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.UnauthenticatedBytes <= 0 {
		cfg.UnauthenticatedBytes = DefaultUnauthenticatedBytes
	}
	if cfg.MaxUnauthenticated <= 0 {
		cfg.MaxUnauthenticated = DefaultMaxUnauthenticated
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Guard{
		cfg: cfg,
		log: cfg.Logger.With("component", "connguard"),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "federate_controlplane_connections_closed_total",
			Help: "Connections to the control plane's API closed by the control plane, by reason.",
		}, []string{"reason"}),
		open: prometheus.NewDesc("federate_controlplane_connections_open",
			"Connections to the control plane's API open now, by whether they presented a client certificate.",
			[]string{"client_certificate"}, nil),
		live:   make(map[string]*conn),
		logged: make(map[string]time.Time),
	}
}

// ServerOptions returns the options that put a gRPC server under the
// guard; creds are the server's own transport credentials, which it wraps.
// They come after the server's other options, which they override.
func (g *Guard) ServerOptions(creds credentials.TransportCredentials) []grpc.ServerOption {
	kp := g.cfg.Keepalive
	kp.MaxConnectionIdle = g.cfg.IdleTimeout
	return []grpc.ServerOption{
		grpc.Creds(guardedCreds{creds, g}),
		grpc.ConnectionTimeout(g.cfg.HandshakeTimeout),
		grpc.KeepaliveParams(kp),
		grpc.StatsHandler(statsHandler{g}),
	}
}

// Closed returns how many connections the guard closed for reason.
func (g *Guard) Closed(reason string) float64 {
	var m dto.Metric
	if err := g.closed.WithLabelValues(reason).Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// Describe implements prometheus.Collector.
func (g *Guard) Describe(ch chan<- *prometheus.Desc) {
	g.closed.Describe(ch)
	ch <- g.open
}

// Collect implements prometheus.Collector.
func (g *Guard) Collect(ch chan<- prometheus.Metric) {
	g.closed.Collect(ch)
	var with, without int
	g.mu.Lock()
	for _, c := range g.live {
		if c.authenticated {
			with++
		} else {
			without++
		}
	}
	g.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(g.open, prometheus.GaugeValue, float64(with), "true")
	ch <- prometheus.MustNewConstMetric(g.open, prometheus.GaugeValue, float64(without), "false")
}

// refused counts and logs a close: once per peer and reason, then again
// only after relogAfter.
func (g *Guard) refused(addr net.Addr, reason string, err error) {
	g.closed.WithLabelValues(reason).Inc()
	host := ""
	if addr != nil {
		host = addr.String()
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
	}
	key := host + " " + reason
	now := time.Now()
	g.mu.Lock()
	last, seen := g.logged[key]
	quiet := seen && now.Sub(last) < relogAfter
	if !quiet {
		if len(g.logged) >= maxLogged {
			clear(g.logged)
		}
		g.logged[key] = now
	}
	g.mu.Unlock()
	if quiet {
		return
	}
	attrs := []any{"peer", host, "reason", reason}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	g.log.Warn("closed a connection to the control plane's API; further ones from this peer for this reason are counted, not logged", attrs...)
}

// guardedCreds wraps the server's TLS credentials: it sees every
// handshake's outcome and every connection's client certificate.
type guardedCreds struct {
	credentials.TransportCredentials
	g *Guard
}

func (c guardedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		reason := ReasonHandshakeFailed
		var ne net.Error
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			reason = ReasonHandshakeTimeout
		}
		c.g.refused(raw.RemoteAddr(), reason, err)
		return nil, nil, err
	}
	tlsInfo, ok := info.(credentials.TLSInfo)
	gc := &conn{Conn: out, g: c.g, key: raw.RemoteAddr().String(), idleSince: time.Now(),
		authenticated: ok && len(tlsInfo.State.PeerCertificates) > 0}
	c.g.mu.Lock()
	full := !gc.authenticated && c.g.unauth >= c.g.cfg.MaxUnauthenticated
	if !full {
		c.g.live[gc.key] = gc
		if !gc.authenticated {
			c.g.unauth++
		}
	}
	c.g.mu.Unlock()
	if full {
		out.Close()
		c.g.refused(raw.RemoteAddr(), ReasonTooManyConnections, nil)
		return nil, nil, errTooManyUnauthenticated
	}
	if !gc.authenticated {
		gc.mu.Lock()
		gc.timer = time.AfterFunc(c.g.cfg.UnauthenticatedTimeout, func() { gc.closeFor(ReasonNoClientCertificate) })
		gc.mu.Unlock()
	}
	return gc, info, nil
}

var (
	errTooManyUnauthenticated = errors.New("connguard: too many connections without a client certificate")
	errTooMuchData            = errors.New("connguard: a connection without a client certificate sent too much")
)

func (c guardedCreds) Clone() credentials.TransportCredentials {
	return guardedCreds{c.TransportCredentials.Clone(), c.g}
}

// conn is a connection under the guard; gRPC closes it when it is done.
type conn struct {
	net.Conn
	g             *Guard
	key           string
	authenticated bool
	once          sync.Once
	read          atomic.Int64 // bytes, counted without a client certificate

	mu        sync.Mutex  // guards the fields below
	timer     *time.Timer // closes a connection without a certificate
	streams   int
	opened    bool
	idleSince time.Time
	closedFor string // set when the guard closes the connection itself
}

func (c *conn) closeFor(reason string) {
	c.mu.Lock()
	c.closedFor = reason
	c.mu.Unlock()
	c.Close()
}

// Read closes a connection without a client certificate once it has sent
// more than UnauthenticatedBytes.
func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.authenticated && c.read.Add(int64(n)) > c.g.cfg.UnauthenticatedBytes {
		c.closeFor(ReasonTooMuchData)
		return 0, errTooMuchData
	}
	return n, err
}

// Close accounts for the connection once, then closes it.
func (c *conn) Close() error {
	c.once.Do(c.ended)
	return c.Conn.Close()
}

func (c *conn) ended() {
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	g := c.g
	g.mu.Lock()
	if g.live[c.key] == c {
		delete(g.live, c.key)
		if !c.authenticated {
			g.unauth--
		}
	}
	g.mu.Unlock()
	c.mu.Lock()
	reason := c.closedFor
	// The guard hears of a stream's end a moment after gRPC does.
	if reason == "" && c.streams == 0 && time.Since(c.idleSince) >= g.cfg.IdleTimeout-g.cfg.IdleTimeout/10 {
		// Idle for that long, the connection was closed by gRPC's
		// MaxConnectionIdle, or by the peer on its GOAWAY.
		reason = ReasonIdle
		if !c.opened {
			reason = ReasonNeverOpenedAStream
		}
	}
	c.mu.Unlock()
	if reason != "" {
		g.refused(c.RemoteAddr(), reason, nil)
	}
}

// statsHandler follows the streams of each connection, so that a close
// for idleness is told from any other.
type statsHandler struct{ g *Guard }

type connKey struct{}

func (h statsHandler) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	h.g.mu.Lock()
	c := h.g.live[info.RemoteAddr.String()]
	h.g.mu.Unlock()
	if c == nil {
		return ctx
	}
	return context.WithValue(ctx, connKey{}, c)
}

func (statsHandler) HandleConn(context.Context, stats.ConnStats) {}

// TagRPC counts a stream from its start to the end of its context, which
// gRPC cancels as it drops the stream, before the handler returns: a
// handler may return much later, and gRPC's idle clock starts at the drop.
func (statsHandler) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	c, ok := ctx.Value(connKey{}).(*conn)
	if !ok {
		return ctx
	}
	c.mu.Lock()
	c.streams++
	c.opened = true
	c.mu.Unlock()
	context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.streams--
		if c.streams == 0 {
			c.idleSince = time.Now()
		}
		c.mu.Unlock()
	})
	return ctx
}

func (statsHandler) HandleRPC(context.Context, stats.RPCStats) {}
