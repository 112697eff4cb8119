package routing

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"
)

// Gateway probe defaults: a remote gateway is down after three missed
// probes a second apart, so its cluster drops out within three seconds.
const (
	DefaultProbeInterval = time.Second
	DefaultProbeMisses   = 3
)

// ProbeConfig configures the active probes of remote gateways.
type ProbeConfig struct {
	// Interval between probes of one gateway (default DefaultProbeInterval);
	// it also bounds each probe.
	Interval time.Duration
	// Misses in a row that mark a gateway down (default DefaultProbeMisses).
	// One successful probe brings it back.
	Misses int
	// Dial connects to a gateway; the default is a TCP connect. The
	// connection is closed at once: reaching the gateway is the test.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

func (c ProbeConfig) withDefaults() ProbeConfig {
	if c.Interval <= 0 {
		c.Interval = DefaultProbeInterval
	}
	if c.Misses <= 0 {
		c.Misses = DefaultProbeMisses
	}
	if c.Dial == nil {
		var d net.Dialer
		c.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	return c
}

// gatewayProber probes every remote gateway it is given and reports
// which are down. Run owns one worker per gateway, reconciled with the
// latest target set.
type gatewayProber struct {
	cfg     ProbeConfig
	log     *slog.Logger
	targets chan []string // latest desired set; capacity 1

	mu      sync.Mutex // guards the fields below
	down    map[string]bool
	changed chan struct{} // closed at the next change of down
}

func newGatewayProber(cfg ProbeConfig, log *slog.Logger) *gatewayProber {
	return &gatewayProber{
		cfg: cfg.withDefaults(), log: log, targets: make(chan []string, 1),
		down: make(map[string]bool), changed: make(chan struct{}),
	}
}

// setTargets replaces the gateways to probe ("host:port"); it never blocks.
func (p *gatewayProber) setTargets(addrs []string) {
	addrs = slices.Clone(addrs)
	for {
		select {
		case p.targets <- addrs:
			return
		default:
		}
		select {
		case <-p.targets: // drop the older set
		default:
		}
	}
}

// isDown reports whether addr missed its last Misses probes.
func (p *gatewayProber) isDown(addr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down[addr]
}

// downList returns the gateways that are down, sorted.
func (p *gatewayProber) downList() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for a, d := range p.down {
		if d {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// changes returns a channel closed at the next change of any gateway's state.
func (p *gatewayProber) changes() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

func (p *gatewayProber) set(addr string, down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down[addr] == down {
		return
	}
	if down {
		p.down[addr] = true
	} else {
		delete(p.down, addr)
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// Run probes until ctx is done.
func (p *gatewayProber) Run(ctx context.Context) error {
	type worker struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	workers := make(map[string]worker)
	stop := func(addr string, w worker) {
		w.cancel()
		<-w.done
		delete(workers, addr)
		p.set(addr, false) // a gateway no longer listed is forgotten
	}
	defer func() {
		for addr, w := range workers {
			stop(addr, w)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case addrs := <-p.targets:
			want := make(map[string]bool, len(addrs))
			for _, a := range addrs {
				want[a] = true
			}
			for addr, w := range workers {
				if !want[addr] {
					stop(addr, w)
				}
			}
			for addr := range want {
				if _, ok := workers[addr]; ok {
					continue
				}
				wctx, cancel := context.WithCancel(ctx)
				w := worker{cancel: cancel, done: make(chan struct{})}
				workers[addr] = w
				go func() {
					defer close(w.done)
					p.probeLoop(wctx, addr)
				}()
			}
		}
	}
}

// probeLoop probes addr at once and then every Interval.
func (p *gatewayProber) probeLoop(ctx context.Context, addr string) {
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	misses := 0
	for {
		pctx, cancel := context.WithTimeout(ctx, p.cfg.Interval)
		c, err := p.cfg.Dial(pctx, addr)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			c.Close()
			if misses >= p.cfg.Misses {
				p.log.Info("remote gateway reachable again", "gateway", addr)
			}
			misses = 0
			p.set(addr, false)
		} else {
			misses++
			if misses == p.cfg.Misses {
				p.log.Warn("remote gateway down: its endpoints are unhealthy until it answers", "gateway", addr, "misses", misses, "err", err)
				p.set(addr, true)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
