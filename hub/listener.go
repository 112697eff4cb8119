package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
)

// Limits on callers that present no client certificate. They may only
// Join, and a join request is a few KiB.
const (
	maxUnauthenticatedMessage = 64 << 10
	maxUnauthenticatedHeaders = 16 << 10
	maxUnauthenticatedConns   = 32
	maxUnauthenticatedStreams = 4 // per connection
	unauthenticatedWindow     = 64 << 10
	unauthenticatedIdle       = 30 * time.Second
	unauthenticatedAge        = time.Minute
	// Handshakes in flight: each holds a goroutine and a TLS record
	// buffer, and one that stalls frees its place after handshakeTimeout.
	maxHandshakes    = 1024
	handshakeTimeout = 10 * time.Second
)

// splitListener completes each TLS handshake itself and hands the
// connection to one of two gRPC servers: callers with a mesh certificate to
// the members' server, the others (joining clusters, and anyone at all) to
// the admission server, whose message, header, window and connection limits
// bound the memory an unauthenticated caller can make the hub hold.
//
// Two servers, because grpc-go reads a whole message, up to the server's
// one size limit, before any handler or interceptor sees who sent it; and
// members publish slices of many MiB.
type splitListener struct {
	lis       net.Listener
	tls       *tls.Config
	log       *slog.Logger
	members   *connQueue
	admission *connQueue

	handshakes chan struct{} // a slot per handshake in flight
	unauth     chan struct{} // a slot per open unauthenticated connection
	refused    atomic.Uint64 // unauthenticated connections closed at the limit
}

func newSplitListener(lis net.Listener, conf *tls.Config, log *slog.Logger) *splitListener {
	conf = conf.Clone()
	conf.NextProtos = []string{"h2"} // gRPC clients insist on ALPN
	return &splitListener{
		lis: lis, tls: conf, log: log,
		members:    newConnQueue(lis.Addr()),
		admission:  newConnQueue(lis.Addr()),
		handshakes: make(chan struct{}, maxHandshakes),
		unauth:     make(chan struct{}, maxUnauthenticatedConns),
	}
}

// run accepts connections until ctx is done; it returns once every
// handshake it started has ended.
func (l *splitListener) run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { l.lis.Close() })
	defer stop()
	backoff := 5 * time.Millisecond
	for {
		select {
		case l.handshakes <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		raw, err := l.lis.Accept()
		if err != nil {
			<-l.handshakes
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors, most likely: wait, as net/http does.
			l.log.Warn("accept failed; retrying", "err", err, "in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.dispatch(ctx, raw)
		}()
	}
}

// dispatch completes the handshake and hands the connection on.
func (l *splitListener) dispatch(ctx context.Context, raw net.Conn) {
	conn, err := l.handshake(ctx, raw)
	<-l.handshakes
	if err != nil {
		l.log.Debug("TLS handshake failed", "remote", raw.RemoteAddr().String(), "err", err)
		return
	}
	if len(conn.ConnectionState().PeerCertificates) > 0 {
		l.members.deliver(ctx, conn)
		return
	}
	select {
	case l.unauth <- struct{}{}:
		l.admission.deliver(ctx, &releasingConn{Conn: conn, release: func() { <-l.unauth }})
	default:
		if l.refused.Add(1)%100 == 1 {
			l.log.Warn("too many connections without a client certificate; closing new ones",
				"limit", maxUnauthenticatedConns, "remote", raw.RemoteAddr().String(), "refused", l.refused.Load())
		}
		conn.Close()
	}
}

func (l *splitListener) handshake(ctx context.Context, raw net.Conn) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	conn := tls.Server(raw, l.tls)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	if conn.ConnectionState().NegotiatedProtocol != "h2" {
		raw.Close()
		return nil, errors.New("hub: the client did not negotiate HTTP/2 (ALPN h2): not a gRPC client")
	}
	return conn, nil
}

// unauthenticatedConns counts the open connections without a client
// certificate.
func (l *splitListener) unauthenticatedConns() int { return len(l.unauth) }

// releasingConn frees its slot when gRPC closes it.
type releasingConn struct {
	*tls.Conn
	once    sync.Once
	release func()
}

func (c *releasingConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// connQueue is the net.Listener a gRPC server accepts handed-over
// connections from.
type connQueue struct {
	addr      net.Addr
	conns     chan net.Conn
	closeOnce sync.Once
	done      chan struct{}
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// deliver hands conn to the server, or closes it if there is none.
func (q *connQueue) deliver(ctx context.Context, conn net.Conn) {
	select {
	case q.conns <- conn:
	case <-q.done:
		conn.Close()
	case <-ctx.Done():
		conn.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.closeOnce.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// handshakeDone is the transport security of connections whose TLS
// handshake the splitListener completed: it reports what the handshake
// established, as credentials.NewTLS would.
type handshakeDone struct{}

func (handshakeDone) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := c.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return nil, nil, errors.New("hub: connection did not come through the TLS listener")
	}
	state := tc.ConnectionState()
	info := credentials.TLSInfo{State: state, CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}
	if len(state.PeerCertificates) > 0 {
		if id, err := x509svid.IDFromCert(state.PeerCertificates[0]); err == nil {
			info.SPIFFEID = id.URL()
		}
	}
	return c, info, nil
}

func (handshakeDone) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("hub: handshakeDone serves only")
}

func (handshakeDone) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (handshakeDone) Clone() credentials.TransportCredentials { return handshakeDone{} }

func (handshakeDone) OverrideServerName(string) error { return nil }
