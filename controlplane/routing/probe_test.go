package hub

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeGateways answers probes from a table the test controls and counts
// the probes per address.
type fakeGateways struct {
	mu     sync.Mutex
	up     map[string]bool
	probes map[string]int
}

func (f *fakeGateways) dial(_ context.Context, addr string) (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probes[addr]++
	if !f.up[addr] {
		return nil, errors.New("connection refused")
	}
	c, s := net.Pipe()
	s.Close()
	return c, nil
}

func (f *fakeGateways) set(addr string, up bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.up[addr] = up
}

func (f *fakeGateways) count(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.probes[addr]
}

// A gateway is down after exactly Misses failed probes, up again after
// one success, and forgotten when it is no longer a target.
func TestGatewayProberMissesAndRecovery(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := &fakeGateways{up: map[string]bool{"a:1": true, "b:1": true}, probes: map[string]int{}}
	p := newGatewayProber(ProbeConfig{Interval: 5 * time.Millisecond, Misses: 3, Dial: f.dial}, slog.New(slog.DiscardHandler))
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	p.setTargets([]string{"a:1", "b:1"})
	eventually(t, 10*time.Second, "probes of both gateways", func() bool { return f.count("a:1") > 0 && f.count("b:1") > 0 })

	f.set("a:1", false)
	before := f.count("a:1")
	changed := p.changes()
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("a:1 was never marked down")
	}
	if !p.isDown("a:1") || p.isDown("b:1") {
		t.Fatalf("down: a:1 %v, b:1 %v; want only a:1", p.isDown("a:1"), p.isDown("b:1"))
	}
	// The failing probes that marked it down: at least Misses, and at
	// most one more that may have been in flight when a:1 went down.
	if n := f.count("a:1") - before; n < 3 || n > 4 {
		t.Errorf("marked down after %d failed probes, want 3", n)
	}
	if got := p.downList(); len(got) != 1 || got[0] != "a:1" {
		t.Errorf("downList %v, want [a:1]", got)
	}

	changed = p.changes()
	f.set("a:1", true)
	select {
	case <-changed:
	case <-ctx.Done():
		t.Fatal("a:1 never came back")
	}
	if p.isDown("a:1") {
		t.Fatal("a:1 still down after a successful probe")
	}

	// A gateway that is down and then no longer listed is forgotten.
	f.set("b:1", false)
	eventually(t, 10*time.Second, "b:1 down", func() bool { return p.isDown("b:1") })
	p.setTargets([]string{"a:1"})
	eventually(t, 10*time.Second, "b:1 forgotten", func() bool { return !p.isDown("b:1") })
	n := f.count("b:1")
	eventually(t, 10*time.Second, "more probes of a:1", func() bool { return f.count("a:1") > 10 })
	if f.count("b:1") > n+1 {
		t.Errorf("b:1 still probed after it was removed")
	}
}
