package eastwest

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// DefaultReturnMemoryEvery is, by default, the least time between two
// returns of memory to the OS.
const DefaultReturnMemoryEvery = 5 * time.Second

// Memory is given back once a burst of closes and parks is over (a
// check found none since the one before) and at least returnAfterBurst
// of them happened since the last time; during a long burst, after every
// returnAfterClosed closed connections or returnAfterParked parked
// directions (a megabyte or more of stacks and buffers); and whenever
// this much free heap is held. Checks run every returnMemoryCheck.
const (
	returnAfterBurst    = 64
	returnAfterClosed   = 512
	returnAfterParked   = 512
	returnAboveFreeHeap = 64 << 20
	returnMemoryCheck   = time.Second
)

// returnMemory gives memory back to the OS after bursts of connections,
// and after many connections went idle, until ctx is done. Go's
// background scavenger alone returns the heap of 17,000 stalled
// connections only minutes after they end, and the stacks of goroutines
// that ended (parked directions' among them) stay with the runtime until
// the next collection. debug.FreeOSMemory collects and returns it all at
// once, at the cost of one forced collection, at most once per every.
func (g *Gateway) returnMemory(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(min(every, returnMemoryCheck))
	defer tick.Stop()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	var last time.Time
	var parksAtLast, parksBefore uint64
	var closedBefore int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		active := g.stats.active.Load()
		closed := g.stats.peakActive.Load() - active
		parks := g.stats.parks.Load()
		// The burst is over when this check finds what the last one did;
		// returning then, not in its middle, gets all of it back at once.
		over := closed == closedBefore && parks == parksBefore
		closedBefore, parksBefore = closed, parks
		if time.Since(last) < every {
			continue
		}
		metrics.Read(sample)
		free := uint64(0)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			free = sample[0].Value.Uint64()
		}
		burst := closed + int64(parks-parksAtLast)
		if !(over && burst >= returnAfterBurst) && closed < returnAfterClosed &&
			parks-parksAtLast < returnAfterParked && free < returnAboveFreeHeap {
			continue
		}
		debug.FreeOSMemory()
		g.stats.memoryReturns.Add(1)
		g.stats.peakActive.Store(active)
		last, parksAtLast = time.Now(), parks
		closedBefore = 0
	}
}
