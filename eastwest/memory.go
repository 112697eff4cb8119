package eastwest

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// DefaultReturnMemoryEvery is how often, by default, the gateway checks
// whether connections that closed left memory to give back to the OS.
const DefaultReturnMemoryEvery = 30 * time.Second

// Memory is given back when this many connections closed since the last
// time, or when this much free heap is held.
const (
	returnAfterClosed   = 1024
	returnAboveFreeHeap = 64 << 20
)

// returnMemory gives memory back to the OS after bursts of connections,
// until ctx is done. Go's background scavenger alone returns the heap of
// 17,000 stalled connections only minutes after they end; debug.FreeOSMemory
// collects and returns it at once, at the cost of one forced collection,
// paid only after many connections closed.
func (g *Gateway) returnMemory(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		active := g.stats.active.Load()
		peak := g.stats.peakActive.Load()
		metrics.Read(sample)
		free := uint64(0)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			free = sample[0].Value.Uint64()
		}
		if peak-active < returnAfterClosed && free < returnAboveFreeHeap {
			continue
		}
		debug.FreeOSMemory()
		g.stats.memoryReturns.Add(1)
		g.stats.peakActive.Store(active)
	}
}
