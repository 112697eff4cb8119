package agent

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	networkingpb "istio.io/api/networking/v1alpha3"
)

type result struct {
	healthy bool
	msg     string
}

// runProbe runs p and returns its reports.
func runProbe(t *testing.T, p *networkingpb.ReadinessProbe) (<-chan result, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan result, 16)
	done := make(chan struct{})
	go func() {
		_ = NewProber(p).Run(ctx, func(h bool, m string) { ch <- result{h, m} })
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ch, cancel
}

func next(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no probe report within 10s")
	}
	return result{}
}

func TestProbeHTTPReportsTransitions(t *testing.T) {
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" || r.Header.Get("X-Probe") != "yes" || failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	ch, _ := runProbe(t, &networkingpb.ReadinessProbe{
		PeriodSeconds: 1, FailureThreshold: 1,
		HealthCheckMethod: &networkingpb.ReadinessProbe_HttpGet{HttpGet: &networkingpb.HTTPHealthCheckConfig{
			Path: "/ready", Port: uint32(p), HttpHeaders: []*networkingpb.HTTPHeader{{Name: "X-Probe", Value: "yes"}},
		}},
	})
	if r := next(t, ch); !r.healthy {
		t.Fatalf("first report %+v, want healthy", r)
	}
	failing.Store(true)
	if r := next(t, ch); r.healthy || !strings.Contains(r.msg, "status 503") {
		t.Fatalf("after the app fails: %+v, want unhealthy with the status", r)
	}
}

func TestProbeTCPAndExec(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens: the first result is a failure
	ch, _ := runProbe(t, &networkingpb.ReadinessProbe{
		HealthCheckMethod: &networkingpb.ReadinessProbe_TcpSocket{TcpSocket: &networkingpb.TCPHealthCheckConfig{Port: uint32(port)}},
	})
	if r := next(t, ch); r.healthy || !strings.Contains(r.msg, "tcpSocket") {
		t.Fatalf("tcp probe of a closed port: %+v", r)
	}

	ch, _ = runProbe(t, &networkingpb.ReadinessProbe{
		HealthCheckMethod: &networkingpb.ReadinessProbe_Exec{Exec: &networkingpb.ExecHealthCheckConfig{Command: []string{"sh", "-c", "exit 0"}}},
	})
	if r := next(t, ch); !r.healthy {
		t.Fatalf("exec probe that exits 0: %+v", r)
	}
	ch, _ = runProbe(t, &networkingpb.ReadinessProbe{
		HealthCheckMethod: &networkingpb.ReadinessProbe_Exec{Exec: &networkingpb.ExecHealthCheckConfig{Command: []string{"sh", "-c", "echo not ready; exit 3"}}},
	})
	if r := next(t, ch); r.healthy || !strings.Contains(r.msg, "not ready") {
		t.Fatalf("exec probe that exits 3: %+v", r)
	}
}
