package probe_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/probe"
)

func TestMain(m *testing.M) { fedtest.Main(m) }

// checks are a process's liveness and readiness that a test sets.
type checks struct {
	mu          sync.Mutex
	live, ready error
}

func (c *checks) set(live, ready error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live, c.ready = live, ready
}

func (c *checks) Live() error  { c.mu.Lock(); defer c.mu.Unlock(); return c.live }
func (c *checks) Ready() error { c.mu.Lock(); defer c.mu.Unlock(); return c.ready }

func start(t *testing.T, c *checks) (addr string, stop func()) {
	t.Helper()
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "federate_test_gauge", Help: "A gauge of the test."})
	gauge.Set(7)
	srv, err := probe.New(probe.Config{Listen: "127.0.0.1:0", Live: c.Live, Ready: c.Ready, Collectors: []prometheus.Collector{gauge}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("probe server: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("the probe server did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return srv.Addr(), stop
}

func get(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// /livez and /readyz answer apart, with the failing check's reason;
// /healthz stays the old name of /readyz; /metrics serves the collector.
func TestHTTPProbesAnswerApart(t *testing.T) {
	t.Parallel()
	c := &checks{ready: errors.New("hub: store writes fail since 2026-01-02T03:04:05Z (3 failures): no space left on device")}
	addr, _ := start(t, c)
	if code, body := get(addr, "/livez"); code != http.StatusOK {
		t.Errorf("/livez of a live process that is not ready: %d %s", code, body)
	}
	for _, path := range []string{"/readyz", "/healthz"} {
		if code, body := get(addr, path); code != http.StatusServiceUnavailable || !strings.Contains(body, "no space left on device") {
			t.Errorf("%s while not ready: %d %q, want 503 with the reason", path, code, body)
		}
	}
	c.set(errors.New("member: the maintenance loop last ran 45s ago (limit 30s): it is stuck"), nil)
	if code, body := get(addr, "/livez"); code != http.StatusServiceUnavailable || !strings.Contains(body, "stuck") {
		t.Errorf("/livez of a wedged process: %d %q", code, body)
	}
	for _, path := range []string{"/readyz", "/healthz"} {
		if code, body := get(addr, path); code != http.StatusOK {
			t.Errorf("%s once ready: %d %s", path, code, body)
		}
	}
	if code, body := get(addr, "/metrics"); code != http.StatusOK || !strings.Contains(body, "federate_test_gauge 7\n") || !strings.Contains(body, "go_goroutines ") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
}

// The gRPC health service answers a plaintext caller without a
// certificate, as a kubelet 'grpc:' probe is: NOT_SERVING until ready,
// with a "liveness" service that follows /livez. Nothing else is served
// over gRPC there.
func TestGRPCHealthForKubeletProbes(t *testing.T) {
	t.Parallel()
	c := &checks{ready: errors.New("starting")}
	addr, stop := start(t, c)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUserAgent("kube-probe/1.37"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	ctx := fedtest.DeadlineContext(t, 30*time.Second)
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q): %v", service, err)
		}
		return resp.GetStatus()
	}
	for _, s := range []string{"", probe.Readiness} {
		if got := check(s); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("Check(%q) before ready = %s, want NOT_SERVING", s, got)
		}
	}
	if got := check(probe.Liveness); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Check(liveness) = %s", got)
	}
	c.set(errors.New("wedged"), nil)
	fedtest.Eventually(t, 5*time.Second, "the readiness service SERVING, the liveness one NOT_SERVING", func() bool {
		return check("") == healthpb.HealthCheckResponse_SERVING && check(probe.Readiness) == healthpb.HealthCheckResponse_SERVING &&
			check(probe.Liveness) == healthpb.HealthCheckResponse_NOT_SERVING
	})
	_, err = health.Check(ctx, &healthpb.HealthCheckRequest{Service: "federate.hub.v1.Hub"})
	fedtest.WantCode(t, err, "Check of an unknown service", codes.NotFound)
	_, err = hubpb.NewRegistryClient(conn).Status(ctx, &hubpb.StatusRequest{})
	fedtest.WantCode(t, err, "the hub API on the health port", codes.Unimplemented)

	stop()
	_, err = health.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Check after stop: %v, want Unavailable", err)
	}
}

// A busy address fails at once, naming the address and the way out.
func TestBusyAddressFails(t *testing.T) {
	t.Parallel()
	addr, _ := start(t, &checks{})
	_, err := probe.New(probe.Config{Listen: addr})
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "choose another address") {
		t.Errorf("a second server on %s: %v", addr, err)
	}
}
