package member_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/tmpfs"
	"github.com/federate/federate/member"
	"github.com/federate/federate/registry"
	"github.com/federate/federate/registry/store"
)

// lockedBuffer collects a logger's output while members run.
type lockedBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A member whose store is on a full disk (a real, small tmpfs) keeps the
// remote state it has, says once what is wrong and what to do, not on
// every retry, and takes the change it missed once there is space.
func TestIntegrationMemberOnFullDisk(t *testing.T) {
	t.Parallel()
	tm := newMesh(t, testTimers)
	east := tm.AddCluster("east")
	east.Update(t, fedtest.CoffeeService("east", "order", 2, 18080))

	disk := t.TempDir()
	tmpfs.Mount(t, disk, 1<<20)
	st, err := store.Open(filepath.Join(disk, "controlplane.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	logs := &lockedBuffer{}
	tm.Join("west")
	west := tm.StartMemberWith("west", func(c *member.Config) {
		c.Store = st
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}).Member
	fedtest.Eventually(t, 10*time.Second, "west holds east", func() bool { return len(west.Services("east")) == 1 })
	held := west.Version("east")

	filler := tmpfs.Fill(t, disk)
	// Large enough to need pages the store does not have yet.
	east.Update(t, fedtest.CoffeeService("east", "order", 2, 18080), fedtest.CoffeeService("east", "catalog", 400, 18084))
	want := east.Member.Version("east")
	fedtest.Eventually(t, 15*time.Second, "west logs its full disk", func() bool {
		return strings.Contains(logs.String(), "no space left on device")
	})
	// Retries, from the hub stream and from gossip, for a while.
	wait := time.NewTimer(3 * time.Second)
	<-wait.C
	if n := strings.Count(logs.String(), "no space left on device"); n != 1 {
		t.Errorf("west logged its full disk %d times in 3 s, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "free space") {
		t.Errorf("west's log does not say what to do:\n%s", logs.String())
	}
	if v := west.Version("east"); registry.Compare(v, held) != 0 || len(west.Services("east")) != 1 {
		t.Errorf("west's view of east changed to %s without being stored", registry.FormatVersion(v))
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 20*time.Second, "west takes east's change once there is space", func() bool {
		return registry.Compare(west.Version("east"), want) == 0
	})
	fedtest.Eventually(t, 5*time.Second, "west logs that its writes succeed again", func() bool {
		return strings.Contains(logs.String(), "store writes succeed again")
	})
}
