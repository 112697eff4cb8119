package routing

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
	mu     sync.Mutex // guards the fields below
	up     map[string]bool
	probes map[string]int
	probed chan struct{} // closed at the next probe
}

func newFakeGateways(up ...string) *fakeGateways {
	f := &fakeGateways{up: map[string]bool{}, probes: map[string]int{}, probed: make(chan struct{})}
	for _, a := range up {
		f.up[a] = true
	}
	return f
}

func (f *fakeGateways) dial(_ context.Context, addr string) (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probes[addr]++
	close(f.probed)
	f.probed = make(chan struct{})
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

// waitProbes waits until cond holds of the probe counts, checking it at
// every probe.
func (f *fakeGateways) waitProbes(t *testing.T, what string, cond func(count func(string) int) bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		probed := f.probed
		ok := cond(func(addr string) int { return f.probes[addr] })
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-probed:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitChange waits for the prober's next change of state.
func waitChange(t *testing.T, changed <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// A gateway is down after exactly Misses failed probes, up again after
// one success, and forgotten when it is no longer a target.
func TestGatewayProberMissesAndRecovery(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := newFakeGateways("a:1", "b:1")
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
	f.waitProbes(t, "probes of both gateways", func(count func(string) int) bool { return count("a:1") > 0 && count("b:1") > 0 })

	f.set("a:1", false)
	before := f.count("a:1")
	waitChange(t, p.changes(), "a:1 marked down")
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

	changed := p.changes()
	f.set("a:1", true)
	waitChange(t, changed, "a:1 back")
	if p.isDown("a:1") {
		t.Fatal("a:1 still down after a successful probe")
	}

	// A gateway that is down and then no longer listed is forgotten.
	changed = p.changes()
	f.set("b:1", false)
	waitChange(t, changed, "b:1 down")
	if !p.isDown("b:1") {
		t.Fatal("the change after b:1 stopped answering is not b:1 down")
	}
	changed = p.changes()
	p.setTargets([]string{"a:1"})
	waitChange(t, changed, "b:1 forgotten")
	if p.isDown("b:1") {
		t.Fatal("b:1 still down after it was removed")
	}
	n := f.count("b:1")
	f.waitProbes(t, "more probes of a:1", func(count func(string) int) bool { return count("a:1") > 10 })
	if f.count("b:1") > n+1 {
		t.Errorf("b:1 still probed after it was removed")
	}
}
