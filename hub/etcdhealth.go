package hub

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
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
// calls then say what is wrong.
func (b *etcdBackend) watchEndpoints(ctx context.Context, log *slog.Logger) error {
	using := b.cfg.Endpoints
	misses := make(map[string]int)
	tick := time.NewTicker(endpointCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		answered := b.answering(ctx)
		var answering []string
		for _, ep := range b.cfg.Endpoints {
			if slices.Contains(answered, ep) {
				misses[ep] = 0
			} else {
				misses[ep]++
			}
			if misses[ep] < endpointMissesToLeave {
				answering = append(answering, ep)
			}
		}
		if len(answering) == 0 {
			answering = b.cfg.Endpoints
		}
		if slices.Equal(answering, using) || ctx.Err() != nil {
			continue
		}
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
