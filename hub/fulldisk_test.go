//go:build linux

package hub_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/hub/hubpb"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/tmpfs"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
	"github.com/prometheus/client_golang/prometheus"
)

// syncBuffer collects a logger's output while the hub runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// gatherHub reads one of the hub's metrics, unlabelled.
func gatherHub(t *testing.T, srv *hub.Server, name string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(srv.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("the hub reports no %s", name)
	return 0
}

// A hub on a full disk (a real, small tmpfs) says so: it logs the failed
// write, counts it, is not ready, and shows it in status; the refused
// change arrives once there is space again; and the hub starts on a full
// disk, since it writes nothing that has not changed.
func TestIntegrationHubOnFullDisk(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	var disk string
	tm := fedtest.NewMeshWith(t, gossip.Timers{}, func(c *hub.Config) {
		if disk == "" {
			disk = c.DataDir
			tmpfs.Mount(t, disk, 4<<20)
		}
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	east := tm.AddCluster("east")
	east.Update(t, fedtest.CoffeeService("east", "order", 2, 18080))
	fedtest.Eventually(t, 10*time.Second, "the hub holds east", func() bool { return tm.Hub.SliceVersion("east") != nil })
	held := tm.Hub.SliceVersion("east")
	ctx := fedtest.DeadlineContext(t, 90*time.Second)

	filler := tmpfs.Fill(t, disk)
	// Large enough to need pages the store does not have yet.
	east.Update(t, fedtest.CoffeeService("east", "order", 2, 18080), fedtest.CoffeeService("east", "catalog", 800, 18084))
	want := east.Member.Version("east")
	fedtest.Eventually(t, 15*time.Second, "the hub notices its full disk", func() bool { return tm.Hub.StoreError() != nil })
	if err := tm.Hub.StoreError(); !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "free space") {
		t.Errorf("StoreError %q does not name the full disk and what to do", err)
	}
	if !strings.Contains(logs.String(), "store write failed") || !strings.Contains(logs.String(), "no space left on device") {
		t.Errorf("the hub's log does not report the failed write:\n%s", logs.String())
	}
	if n := gatherHub(t, tm.Hub, "federate_hub_store_write_failures_total"); n < 1 {
		t.Errorf("federate_hub_store_write_failures_total = %v, want at least 1", n)
	}
	if v := gatherHub(t, tm.Hub, "federate_hub_store_healthy"); v != 0 {
		t.Errorf("federate_hub_store_healthy = %v while writes fail, want 0", v)
	}
	st, err := tm.AdminRegistry().Status(ctx, &hubpb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if s := st.GetStore(); !strings.Contains(s.GetError(), "no space left on device") || s.GetFailingSince() == 0 || s.GetWriteFailures() == 0 {
		t.Errorf("status shows the store as %v, want the full disk", s)
	}
	if v := tm.Hub.SliceVersion("east"); registry.Compare(v, held) != 0 {
		t.Errorf("the hub applied east's change (%s) that it could not store", registry.FormatVersion(v))
	}

	// Space again: the member's retry lands, and the hub is healthy.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 20*time.Second, "east's change stored once there is space", func() bool {
		return registry.Compare(tm.Hub.SliceVersion("east"), want) == 0
	})
	if err := tm.Hub.StoreError(); err != nil {
		t.Errorf("StoreError after a successful write: %v", err)
	}
	if v := gatherHub(t, tm.Hub, "federate_hub_store_healthy"); v != 1 {
		t.Errorf("federate_hub_store_healthy = %v after a successful write, want 1", v)
	}
	if !strings.Contains(logs.String(), "store writes succeed again") {
		t.Error("the hub's log does not say that writes succeed again")
	}

	// Starting on a full disk: nothing unchanged is rewritten.
	caPath := filepath.Join(disk, membership.CAFile)
	before, err := os.Stat(caPath)
	if err != nil {
		t.Fatal(err)
	}
	tm.StopHub()
	tmpfs.Fill(t, disk)
	tm.StartHub()
	if _, err := tm.AdminRegistry().Status(ctx, &hubpb.StatusRequest{}); err != nil {
		t.Fatalf("status of a hub started on a full disk: %v", err)
	}
	if after, err := os.Stat(caPath); err != nil || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("%s was rewritten on start (%v)", membership.CAFile, err)
	}
	if registry.Compare(tm.Hub.SliceVersion("east"), want) != 0 {
		t.Errorf("the restarted hub holds east at %s, want %s", registry.FormatVersion(tm.Hub.SliceVersion("east")), registry.FormatVersion(want))
	}
}
