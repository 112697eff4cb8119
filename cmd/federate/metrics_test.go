package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// 'federate hub --metrics-listen' serves the hub's metrics and health over
// HTTP while it runs, and stops serving when it stops.
func TestHubServesMetrics(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	var out, errOut bytes.Buffer
	go func() {
		done <- run(runCtx, []string{"hub", "--listen", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--data-dir", t.TempDir(),
			"--mesh", "shop", "--metrics-listen", addr, "--log-level", "error"}, &out, &errOut)
	}()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for code, _ := get("/healthz"); code != http.StatusOK; code, _ = get("/healthz") {
		select {
		case err := <-done:
			t.Fatalf("hub ended: %v\n%s", err, errOut.String())
		case <-ctx.Done():
			t.Fatal("the hub's /healthz never answered 200")
		case <-tick.C:
		}
	}
	for _, path := range []string{"/livez", "/readyz"} {
		if code, body := get(path); code != http.StatusOK {
			t.Errorf("%s of a running hub: %d %s", path, code, body)
		}
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		"federate_gossip_members 1\n",
		"federate_hub_subscribers 0\n",
		"federate_hub_store_healthy 1\n",
		"federate_hub_store_write_failures_total 0\n",
		"federate_hub_unauthenticated_connections 0\n",
		`federate_certificate_expiry_timestamp_seconds{kind="hub"}`,
		`federate_liveness_timer_seconds{timer="stale_after"} 30`,
		`federate_build_info{binary="federate",commit="`,
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("hub: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the hub did not stop")
	}
	if code, _ := get("/healthz"); code != 0 {
		t.Errorf("metrics still served after the hub stopped: %d", code)
	}
}

func TestMetricsFlagIsDocumented(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"hub", "controlplane"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{cmd, "--help"}, &out, &out); err != nil {
			t.Fatalf("%s --help: %v", cmd, err)
		}
		if !strings.Contains(out.String(), "--metrics-listen") {
			t.Errorf("%s --help does not document --metrics-listen", cmd)
		}
	}
}
