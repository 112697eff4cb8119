package file

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/federate/federate/registry/registrypb"
)

// waitTimeout bounds every wait in these tests.
const waitTimeout = 10 * time.Second

// receive waits for a value on ch, failing the test after waitTimeout.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// recordHandler hands log records to a channel, dropping them when it is full.
type recordHandler struct{ records chan slog.Record }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h recordHandler) WithGroup(string) slog.Handler            { return h }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.records <- r.Clone():
	default:
	}
	return nil
}

// run is a Source running in the background of a test.
type run struct {
	src     *Source
	updates <-chan []*registrypb.Service
	logs    <-chan slog.Record
}

// startRun runs a Source for cfg until the test ends, and checks in cleanup
// that Run returned nil.
func startRun(t *testing.T, cfg Config) run {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	logs := make(chan slog.Record, 64)
	cfg.Logger = slog.New(recordHandler{records: logs})
	cfg.Interval = 20 * time.Millisecond
	updates := make(chan []*registrypb.Service, 16)
	done := make(chan error, 1)
	src := New(cfg)
	go func() {
		done <- src.Run(ctx, func(s []*registrypb.Service) {
			select {
			case updates <- s:
			case <-ctx.Done():
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := receive(t, done, "Run to return"); err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	})
	return run{src: src, updates: updates, logs: logs}
}

func TestRunPicksUpChanges(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"order.yaml": exampleYAML})
	r := startRun(t, testConfig(dir))

	got := receive(t, r.updates, "the first set")
	if diff := cmp.Diff([]*registrypb.Service{orderService()}, got, protocmp.Transform()); diff != "" {
		t.Fatalf("first set mismatch (-want +got):\n%s", diff)
	}

	// Exporting the private service and moving an endpoint are both seen.
	moved := strings.Replace(exampleYAML, "address: 127.0.0.2", "address: 127.0.0.3", 1)
	writeFiles(t, dir, map[string]string{
		"ledger.yaml": privateYAML + ledgerExport,
		"order.yaml":  moved,
	})
	want := []*registrypb.Service{
		{
			Hostname:  "ledger.shop.svc.cluster.local",
			Namespace: "shop",
			Name:      "ledger",
			Ports:     []*registrypb.Port{{Name: "tcp", Number: 9000, Protocol: "TCP"}},
			Endpoints: []*registrypb.Endpoint{{
				Address:  "127.0.0.9",
				Ports:    map[string]uint32{"tcp": 9000},
				Locality: &registrypb.Locality{Region: "eu-west", Zone: "eu-west-1a"},
				Network:  "home",
				Health:   registrypb.Health_HEALTHY,
				SpiffeId: "spiffe://east.shop/ns/shop/sa/default",
				Weight:   1,
			}},
		},
		orderService(),
	}
	want[1].Endpoints[1].Address = "127.0.0.3"
	// The two files may be seen one at a time; wait for the final set.
	for {
		got = receive(t, r.updates, "the changed set")
		if cmp.Equal(want, got, protocmp.Transform()) {
			break
		}
		t.Logf("intermediate set: %d services", len(got))
	}
}

func TestRunKeepsLastGoodSet(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"order.yaml": exampleYAML})
	r := startRun(t, testConfig(dir))
	receive(t, r.updates, "the first set")

	// Break the file: the failure is logged with the file, and no set is
	// reported.
	writeFiles(t, dir, map[string]string{"order.yaml": strings.Replace(exampleYAML, "address: 127.0.0.2", "address: vm.example.com", 1)})
	path := filepath.Join(dir, "order.yaml")
	for {
		rec := receive(t, r.logs, "the load failure to be logged")
		if rec.Level != slog.LevelWarn {
			continue
		}
		var file string
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "file" {
				file = a.Value.String()
			}
			return true
		})
		if file != path {
			t.Errorf("failure logged with file %q, want %q", file, path)
		}
		break
	}
	select {
	case got := <-r.updates:
		t.Fatalf("Run reported %d services after a broken edit, want the last good set kept", len(got))
	default:
	}

	// Fixing the file brings the next set, with nothing reported in between.
	writeFiles(t, dir, map[string]string{"order.yaml": strings.Replace(exampleYAML, "address: 127.0.0.2", "address: 127.0.0.4", 1)})
	want := []*registrypb.Service{orderService()}
	want[0].Endpoints[1].Address = "127.0.0.4"
	got := receive(t, r.updates, "the fixed set")
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("fixed set mismatch (-want +got):\n%s", diff)
	}
}

func TestRunReturnsFirstLoadError(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"order.yaml": "kind: Service\n"})
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	called := false
	err := New(testConfig(dir)).Run(ctx, func([]*registrypb.Service) { called = true })
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "order.yaml")) || !strings.Contains(err.Error(), `unknown kind "Service"`) {
		t.Fatalf("Run error = %v, want the unknown kind in order.yaml", err)
	}
	if called {
		t.Error("Run called onChange although the first load failed")
	}
}

func TestNewDefaults(t *testing.T) {
	s := New(Config{Dir: "does-not-matter"})
	if s.interval != DefaultInterval {
		t.Errorf("interval = %v, want %v", s.interval, DefaultInterval)
	}
	if s.log == nil {
		t.Error("logger is nil, want slog.Default()")
	}
}
