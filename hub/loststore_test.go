package hub_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/hub"
	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/membership"
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
