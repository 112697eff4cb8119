package hub

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// How often, and how patiently, a replica asks each etcd member whether it
// answers, and how many checks in a row a member must miss to be left:
// one slow answer on a busy host is no reason to move calls.
const (
	endpointCheckEvery    = time.Second
	endpointCheckTimeout  = 1500 * time.Millisecond
	endpointMissesToLeave = 2
)

// watchEndpoints keeps the etcd client on the members that answer. A
// frozen member (a stopped process, a hung host) keeps its connections
// open; the client spreads calls over every member and would send some of
// them there to wait out etcdTimeout and fail, and gRPC's keepalive, which
// runs at 10 s at the least, notices only after that. A member that
// answers again is used again. While none answers, all are kept: the
// calls then say what is wrong. A call that timed out has the members
// checked at once, and waits for the check (idempotent).
func (b *etcdBackend) watchEndpoints(ctx context.Context, log *slog.Logger) error {
	b.checks.watching.Store(true)
	defer func() {
		b.checks.watching.Store(false)
		done, _ := b.checks.begin() // no check comes: calls go on
		close(done)
	}()
	using := b.cfg.Endpoints
	misses := make(map[string]int)
	tick := time.NewTicker(endpointCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-b.checks.asked:
		}
		done, suspected := b.checks.begin()
		answered := b.answering(ctx)
		var answering []string
		for _, ep := range b.cfg.Endpoints {
			switch {
			case slices.Contains(answered, ep):
				misses[ep] = 0
			case suspected:
				// A call timed out, and this member does not answer
				// either: no need to wait for a second miss.
				misses[ep] = endpointMissesToLeave
			default:
				misses[ep]++
			}
			if misses[ep] < endpointMissesToLeave {
				answering = append(answering, ep)
			}
		}
		if len(answering) == 0 {
			answering = b.cfg.Endpoints
		}
		if !slices.Equal(answering, using) && ctx.Err() == nil {
			var silent []string
			for _, ep := range b.cfg.Endpoints {
				if !slices.Contains(answering, ep) {
					silent = append(silent, ep)
				}
			}
			log.Warn("etcd members answering changed: calls go to those that answer", "using", answering, "not answering", silent)
			b.cli.SetEndpoints(answering...)
			using = answering
		}
		close(done)
	}
}

// memberChecks is how calls that timed out ask watchEndpoints for a check
// of the members, and wait for it.
type memberChecks struct {
	watching atomic.Bool   // watchEndpoints runs: checks are made
	asked    chan struct{} // has a value while a call waits for the next check
	mu       sync.Mutex
	next     chan struct{} // closed when the next check ends
	calls    bool          // calls wait for it
}

func newMemberChecks() *memberChecks {
	return &memberChecks{asked: make(chan struct{}, 1), next: make(chan struct{})}
}

// ask has the next check begin soon and returns a channel closed when it
// has ended; nil (no wait) while no checks are made, as before the
// replica serves.
func (m *memberChecks) ask() <-chan struct{} {
	if !m.watching.Load() {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = true
	select {
	case m.asked <- struct{}{}:
	default: // asked already
	}
	return m.next
}

// begin starts a check: it returns the channel to close when it ends, and
// whether calls wait for it.
func (m *memberChecks) begin() (done chan struct{}, calls bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	done, calls = m.next, m.calls
	m.next, m.calls = make(chan struct{}), false
	return done, calls
}

// answering returns the configured endpoints whose member answers its
// status within endpointCheckTimeout, in their configured order.
func (b *etcdBackend) answering(ctx context.Context) []string {
	ok := make([]bool, len(b.cfg.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range b.cfg.Endpoints {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, endpointCheckTimeout)
			defer cancel()
			_, err := b.cli.Status(sctx, ep)
			ok[i] = err == nil
		})
	}
	wg.Wait()
	var out []string
	for i, ep := range b.cfg.Endpoints {
		if ok[i] {
			out = append(out, ep)
		}
	}
	return out
}

// etcdFirstTry bounds the first try of an idempotent call: a call sent
// to a frozen member waits out its whole try.
const etcdFirstTry = time.Second

// idempotent makes a call that may safely be made twice. When its first
// try times out or loses its member, it has watchEndpoints check the
// members, which leaves one that does not answer at once, and tries again
// on those that do with the rest of ctx's time.
func (b *etcdBackend) idempotent(ctx context.Context, call func(context.Context) error) error {
	first, cancel := context.WithTimeout(ctx, etcdFirstTry)
	err := call(first)
	cancel()
	if err == nil || ctx.Err() != nil || !memberLost(err) {
		return err
	}
	if checked := b.checks.ask(); checked != nil {
		select {
		case <-checked:
		case <-ctx.Done():
			return err
		}
	}
	return call(ctx)
}

// memberLost says whether err is a try that timed out or lost its
// connection: another member may answer.
func memberLost(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Unavailable:
		return true
	}
	return false
}
