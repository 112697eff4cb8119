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
// once, at the cost of one forced collection.
func (g *Gateway) returnMemory(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(min(every, returnMemoryCheck))
	defer tick.Stop()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	d := returnDecider{every: every}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		active := g.stats.active.Load()
		metrics.Read(sample)
		free := uint64(0)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			free = sample[0].Value.Uint64()
		}
		if !d.check(time.Now(), g.stats.peakActive.Load()-active, g.stats.parks.Load(), free) {
			continue
		}
		debug.FreeOSMemory()
		g.stats.memoryReturns.Add(1)
		g.stats.peakActive.Store(active) // closes count from here
	}
}

// returnDecider decides at each check whether to return memory: at most
// once per every during a burst of closes and parks, and once more at
// its end. The end needs its own return: one during the burst comes
// while goroutines are still ending (a sweep asks every idle direction
// to park at once), and what they leave after it would otherwise wait
// for the next burst, or for every to pass (the benchmark's 1,000 idle
// connections cost 6.4 KiB each 7 s later, 2.3 of them stacks of ended
// goroutines).
type returnDecider struct {
	every        time.Duration
	last         time.Time
	lastMidBurst bool // the last return came during a burst
	parksAtLast  uint64
	parksBefore  uint64
	closedBefore int64
}

// check is called every returnMemoryCheck with the connections closed
// since the last return, the parks so far and the free heap; true means
// return memory now (the closes count from zero after).
func (d *returnDecider) check(now time.Time, closed int64, parks, freeHeap uint64) bool {
	// The burst is over when this check finds what the last one did;
	// returning then, not in its middle, gets all of it back at once.
	over := closed == d.closedBefore && parks == d.parksBefore
	d.closedBefore, d.parksBefore = closed, parks
	burst := closed + int64(parks-d.parksAtLast)
	atEnd := over && burst >= returnAfterBurst
	midBurst := closed >= returnAfterClosed || parks-d.parksAtLast >= returnAfterParked ||
		freeHeap >= returnAboveFreeHeap
	switch {
	case atEnd && d.lastMidBurst:
	case (atEnd || midBurst) && now.Sub(d.last) >= d.every:
	default:
		return false
	}
	d.last, d.lastMidBurst, d.parksAtLast, d.closedBefore = now, !atEnd, parks, 0
	return true
}
