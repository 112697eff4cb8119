package controlplane_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/federate/federate/controlplane"
	"github.com/federate/federate/internal/fedtest"
)

// lineLog keeps the messages a control plane logs, one per line.
type lineLog struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (l *lineLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *lineLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.WriteString(r.Message + "\n")
	return nil
}
func (l *lineLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *lineLog) WithGroup(string) slog.Handler      { return l }

// count reports how many messages contain s.
func (l *lineLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

// A config directory removed (a redeploy that replaces it) keeps the
// services it declared, says so once per reading of it, not once per
// poll, and says when it reads again; recreated, it is followed as before.
func TestIntegrationConfigDirRemovedAndRecreated(t *testing.T) {
	t.Parallel()
	tm := fedtest.NewMesh(t, testTimers)
	t.Cleanup(tm.StopMembers)
	dir := t.TempDir()
	writeFile(t, dir, "order.yaml", serviceYAML("order", 0))
	tm.Join("east")
	logs := &lineLog{}
	cp := tm.StartControlPlane("east", controlplane.Config{ConfigDir: dir, ConfigInterval: configPoll, Logger: slog.New(logs)})
	m := cp.Member()
	fedtest.Eventually(t, 10*time.Second, "east to publish order", func() bool { return len(m.Services("east")) == 1 })

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	fedtest.Eventually(t, 10*time.Second, "the missing directory logged", func() bool {
		return logs.count("keeping the last good services") > 0 && logs.count("does not list") > 0
	})
	// Many polls of the missing directory: each problem is logged once.
	polls := time.NewTimer(50 * configPoll)
	<-polls.C
	if n := logs.count("does not list"); n != 1 {
		t.Errorf("the missing directory's imports were logged %d times in 50 polls, want once", n)
	}
	if n := logs.count("keeping the last good services"); n != 1 {
		t.Errorf("the missing directory's services were logged %d times in 50 polls, want once", n)
	}
	if len(m.Services("east")) != 1 {
		t.Error("east withdrew order while its directory was missing")
	}

	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "order.yaml", serviceYAML("order", 0))
	writeFile(t, dir, "ledger.yaml", serviceYAML("ledger", 0))
	fedtest.Eventually(t, 10*time.Second, "east to publish ledger from the recreated directory", func() bool { return len(m.Services("east")) == 2 })
	fedtest.Eventually(t, 10*time.Second, "the imports' recovery logged", func() bool { return logs.count("imports: the config directory lists again") == 1 })
}
