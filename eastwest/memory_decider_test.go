package eastwest

import (
	"testing"
	"time"
)

// The decision of when to give memory back, check by check (one a
// second), with every = 5 s.
func TestReturnDeciderReturnsAtTheEndOfABurst(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	type check struct {
		closed int64
		parks  uint64
		want   bool
		why    string
	}
	steps := []check{
		{0, 0, false, "nothing happened"},
		{10, 0, false, "a burst starts"},
		{10, 0, false, "it ended, but it was small"},
		{20, 700, true, "parks pass the threshold in the middle of a burst"},
		{0, 1400, false, "the burst goes on; the last return was a second ago"},
		{0, 2000, false, "still going"},
		{0, 2000, true, "over: what ended after the return goes back now, not 5 s later"},
		{0, 2000, false, "quiet"},
		{100, 2000, false, "a new burst, 2 s after the last return"},
		{100, 2000, false, "over, but the last return was at an end, 3 s ago"},
		{700, 2000, false, "many closes, 4 s after the last return"},
		{700, 2000, true, "over, 5 s after: returned"},
		{0, 2000, false, "quiet"},
	}
	d := returnDecider{every: 5 * time.Second}
	for i, s := range steps {
		now := start.Add(time.Duration(i+1) * time.Second)
		if got := d.check(now, s.closed, s.parks, 0); got != s.want {
			t.Fatalf("check %d (%s): return %v, want %v", i+1, s.why, got, s.want)
		}
	}
}

func TestReturnDeciderReturnsFreeHeap(t *testing.T) {
	d := returnDecider{every: 5 * time.Second}
	now := time.Unix(1_700_000_000, 0)
	if !d.check(now, 0, 0, returnAboveFreeHeap) {
		t.Fatal("64 MiB of free heap not returned")
	}
	if d.check(now.Add(time.Second), 0, 0, returnAboveFreeHeap) {
		t.Fatal("returned again a second later")
	}
}
