package workloads

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/federate/federate/internal/tmpfs"
	"github.com/federate/federate/registry/store"
)

// On a full disk (a real, small tmpfs) a save fails with a warning and
// loses nothing: the entry serves on from memory, and the next save once
// there is space writes it.
func TestSavedEntriesWaitOutAFullDisk(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk")
	tmpfs.Mount(t, disk, 1<<20)
	st, err := store.Open(filepath.Join(disk, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var logs bytes.Buffer
	w, err := New(Config{Federation: noFederation{}, Store: st, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	filler := tmpfs.Fill(t, disk)
	// Large enough to need pages the store does not have yet.
	big := strings.Repeat("x", 64<<10)
	w.mu.Lock()
	for _, ip := range []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"} {
		key := "shop/barista-" + ip
		w.entries[key] = &workloadEntry{namespace: "shop", name: "barista-" + ip, group: "barista", address: ip,
			id: spiffeid.RequireFromString("spiffe://central.shop/ns/shop/sa/barista"), streams: 1,
			annotations: map[string]string{"big": big}}
		w.markLocked(key)
	}
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.save(ctx, false)
	if !strings.Contains(logs.String(), "save the workload entries") || !strings.Contains(logs.String(), "no space left on device") {
		t.Fatalf("the failed save was not logged with its cause:\n%s", logs.String())
	}
	if n := len(w.Entries()); n != 3 {
		t.Errorf("%d entries after the failed save, want 3", n)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	w.save(ctx, false)
	saved, err := LoadSaved(st, DefaultGrace, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(saved.entries) != 3 || len(saved.dropped) != 0 {
		t.Errorf("saved %d entries (%d dropped) once there was space, want the 3", len(saved.entries), len(saved.dropped))
	}
}
