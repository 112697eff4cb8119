package hub_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
	"github.com/federate/federate/registry"
)

// A hub whose store is gone or damaged, while its data directory still
// holds the mesh CA's certificate, does not start: a new CA would cut off
// every cluster that joined. It says to restore the store, and leaves the
// data directory as it was.
func TestHubWithLostStoreKeepsItsCA(t *testing.T) {
	t.Parallel()
	var cfg hub.Config
	tm := fedtest.NewMeshWith(t, gossip.Timers{}, func(c *hub.Config) { cfg = *c })
	east := tm.AddCluster("east")
	east.Update(t, fedtest.CoffeeService("east", "order", 1, 18080))
	fedtest.Eventually(t, 10*time.Second, "the hub holds east", func() bool { return tm.Hub.SliceVersion("east") != nil })
	tm.StopHub()

	caPath := filepath.Join(cfg.DataDir, membership.CAFile)
	storePath := filepath.Join(cfg.DataDir, hub.StoreFile)
	ca, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(storePath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		store func() error
		want  []string
	}{
		{"deleted", func() error { return os.Remove(storePath) }, []string{storePath, "backup", caPath}},
		{"emptied", func() error { return os.WriteFile(storePath, nil, 0o600) }, []string{storePath, "backup", caPath}},
		{"truncated", func() error { return os.WriteFile(storePath, good[:2*os.Getpagesize()+100], 0o600) }, []string{storePath, "truncated", "backup", "mesh CA"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(storePath, good, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := tc.store(); err != nil {
				t.Fatal(err)
			}
			c := cfg
			c.Listen, c.GossipBind = "127.0.0.1:0", "127.0.0.1:0"
			err := startErr(t, c)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the hub did not start with %q, want it to name %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "resynced") {
				t.Errorf("the hub's error %q says its state comes back by itself: the CA does not", err)
			}
			if now, err := os.ReadFile(caPath); err != nil || !bytes.Equal(now, ca) {
				t.Errorf("the hub replaced the mesh CA's certificate in %s (err %v)", caPath, err)
			}
		})
	}

	// The store put back, the hub starts with its CA and east's slice.
	if err := os.WriteFile(storePath, good, 0o600); err != nil {
		t.Fatal(err)
	}
	tm.StartHub()
	if err := createToken(t, tm.HubAddr, cfg.DataDir, caPath); err != nil {
		t.Errorf("the restored hub refused its admin credential: %v", err)
	}
	if tm.Hub.SliceVersion("east") == nil {
		t.Error("the restored hub lost east's slice")
	}
}

// A hub whose store file is removed while it runs refuses the changes it
// could no longer keep, is not ready, and says how to put the file back;
// put back and restarted, it holds everything it acknowledged, and its
// members' refused changes arrive.
func TestHubStoreRemovedWhileRunning(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	var cfg hub.Config
	tm := fedtest.NewMeshWith(t, gossip.Timers{}, func(c *hub.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		cfg = *c
	})
	east := tm.AddCluster("east")
	east.Update(t, fedtest.CoffeeService("east", "order", 1, 18080))
	fedtest.Eventually(t, 10*time.Second, "the hub holds east", func() bool { return tm.Hub.SliceVersion("east") != nil })
	held := tm.Hub.SliceVersion("east")

	storePath := filepath.Join(cfg.DataDir, hub.StoreFile)
	if err := os.Remove(storePath); err != nil {
		t.Fatal(err)
	}
	east.Update(t, fedtest.CoffeeService("east", "order", 2, 18080))
	want := east.Member.Version("east")
	fedtest.Eventually(t, 15*time.Second, "the hub notices its store is gone", func() bool { return tm.Hub.StoreError() != nil })
	storeErr := tm.Hub.StoreError()
	if !strings.Contains(storeErr.Error(), storePath) || !strings.Contains(storeErr.Error(), "removed") {
		t.Errorf("StoreError %q does not say that %s was removed", storeErr, storePath)
	}
	if err := tm.Hub.Readiness(); err == nil {
		t.Error("the hub is ready while its store is gone")
	}
	if !strings.Contains(logs.String(), "store write failed") {
		t.Errorf("the hub's log does not report the refused write:\n%s", logs.String())
	}
	if v := tm.Hub.SliceVersion("east"); registry.Compare(v, held) != 0 {
		t.Errorf("the hub applied east's change (%s) that it could not keep", registry.FormatVersion(v))
	}

	// Put back from the copy the error names, as it says, and restart.
	open := regexp.MustCompile(`/proc/\d+/fd/\d+`).FindString(storeErr.Error())
	if open == "" {
		t.Fatalf("StoreError %q names no copy of the open file", storeErr)
	}
	data, err := os.ReadFile(open)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(storePath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	tm.StopHub()
	tm.StartHub()
	fedtest.Eventually(t, 20*time.Second, "east's change stored once the store is back", func() bool {
		return registry.Compare(tm.Hub.SliceVersion("east"), want) == 0
	})
	if err := tm.Hub.StoreError(); err != nil {
		t.Errorf("StoreError after the store is back: %v", err)
	}
}
