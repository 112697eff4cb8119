package controlplane_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc/credentials"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/trust"
)

// closedCounter returns how many connections cp's API closed for a reason.
func closedCounter(t *testing.T, cp *fedtest.ControlPlane) func(reason string) float64 {
	reg := prometheus.NewRegistry()
	reg.MustRegister(cp.Collector())
	return func(reason string) float64 {
		t.Helper()
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() != "federate_controlplane_connections_closed_total" {
				continue
			}
			for _, metric := range f.GetMetric() {
				if metric.GetLabel()[0].GetValue() == reason {
					return metric.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
}

// Connections to the control plane's API that do not show who they are
// are closed within seconds, counted by reason and logged once per peer
// and reason: a TCP connection that never starts TLS, a TLS connection
// without a client certificate, an authenticated one that never opens a
// stream, and one whose streams ended. A gateway's open xDS stream
// outlives them all.
func TestAPIClosesUnauthenticatedAndIdleConnections(t *testing.T) {
	t.Parallel()
	const handshake, unauthenticated, idle = time.Second, time.Second, 2 * time.Second
	// gRPC's MaxConnectionIdle sends a GOAWAY and a ping, and closes at
	// the latest 5 s later when the ping is not answered.
	const slack = 10 * time.Second
	tm := fedtest.NewMesh(t, gossip.Timers{})
	tm.Join("east")
	logs := &refusalLog{}
	cp := tm.StartControlPlane("east", controlplane.Config{
		Source:           fedtest.NewSource(fedtest.CoffeeService("east", "order", 2, 8080)),
		HandshakeTimeout: handshake, UnauthenticatedTimeout: unauthenticated, IdleTimeout: idle,
		Logger: slog.New(logs),
	})
	m := cp.Member()
	addr := m.Addr()
	closed := closedCounter(t, cp)
	mesh := spiffeid.RequireTrustDomainFromString(m.Mesh())
	bundle := trust.Bundle(mesh, m.MeshCA()...)
	gatewayCred, err := m.Authority().IssueCredential(spiffeid.RequireFromPath(m.Authority().TrustDomain(), controlplane.GatewayPath), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	gatewayTLS := trust.ClientTLS(gatewayCred, bundle, tlsconfig.AuthorizeMemberOf(mesh))

	// The gateway's stream, open from the start to the end.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	held := fedtest.DialWith(t, addr, credentials.NewTLS(gatewayTLS))
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(held).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	request := func(typ string) {
		t.Helper()
		if err := stream.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: "gw"}, TypeUrl: typ}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("the gateway's stream: %v", err)
		}
	}
	request(resourcev3.ListenerType)

	// closedWithin waits for the server to close c.
	closedWithin := func(what string, c net.Conn, limit time.Duration) {
		t.Helper()
		start := time.Now()
		c.SetReadDeadline(start.Add(limit + 10*time.Second))
		_, err := io.Copy(io.Discard, c)
		took := time.Since(start)
		if err != nil || took > limit {
			t.Errorf("%s: closed after %s (%v), want within %s", what, took.Round(time.Millisecond), err, limit)
		}
		t.Logf("%s: closed after %s", what, took.Round(time.Millisecond))
	}
	dialTLS := func(conf *tls.Config) net.Conn {
		t.Helper()
		conf = conf.Clone()
		conf.NextProtos = []string{"h2"}
		c, err := tls.Dial("tcp", addr, conf)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		// The HTTP/2 preface and an empty SETTINGS frame: a client that
		// then does nothing.
		if _, err := c.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)); err != nil {
			t.Fatal(err)
		}
		return c
	}

	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		closedWithin("a TCP connection that sends nothing", c, handshake+slack)
		c.Close()
	}
	noCert := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeMemberOf(mesh))
	closedWithin("TLS without a client certificate", dialTLS(noCert), unauthenticated+slack)
	closedWithin("TLS with a certificate and no stream", dialTLS(gatewayTLS), idle+slack)

	// A gRPC client whose one stream ended is idle from then on.
	conn := fedtest.DialWith(t, addr, credentials.NewTLS(gatewayTLS))
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	s, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err == nil {
		err = s.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: "gw"}, TypeUrl: resourcev3.ClusterType})
	}
	if err == nil {
		_, err = s.Recv()
	}
	if err != nil {
		t.Fatal(err)
	}
	scancel()
	// Its idle timer starts once the server has seen the stream end.
	fedtest.Eventually(t, idle+3*slack, "the idle gRPC connection closed", func() bool { return closed("idle") == 1 })

	for reason, want := range map[string]float64{"handshake_timeout": 2, "no_client_certificate": 1, "never_opened_a_stream": 1, "idle": 1} {
		fedtest.Eventually(t, 5*time.Second, reason+" counted", func() bool { return closed(reason) == want })
		if got := logs.count(reason); got != 1 {
			t.Errorf("%s logged %d times, want once", reason, got)
		}
	}
	// The gateway's stream is open and answers.
	request(resourcev3.ClusterType)
}

// refusalLog counts the guard's log lines by reason.
type refusalLog struct {
	mu       sync.Mutex
	byReason map[string]int
}

func (l *refusalLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *refusalLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *refusalLog) WithGroup(string) slog.Handler            { return l }

func (l *refusalLog) Handle(_ context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, "closed a connection") {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "reason" {
			l.mu.Lock()
			if l.byReason == nil {
				l.byReason = make(map[string]int)
			}
			l.byReason[a.Value.String()]++
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

func (l *refusalLog) count(reason string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byReason[reason]
}
