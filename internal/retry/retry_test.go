package retry

import (
	"context"
	"slices"
	"testing"
	"time"
)

// A thousand agents that lost their control plane at the same instant
// spread their first retries over the whole window instead of arriving
// together, and their later retries stay spread.
func TestJitterSpreadsAFleetsRetries(t *testing.T) {
	const agents = 1000
	first, last := 200*time.Millisecond, 5*time.Second
	fleet := make([]*Backoff, agents)
	for i := range fleet {
		fleet[i] = New(first, last)
	}
	// at[i] is when agent i makes its attempt after n failures.
	at := make([]time.Duration, agents)
	for attempt := 1; attempt <= 8; attempt++ {
		bound := min(first<<(attempt-1), last)
		buckets := make(map[int]int)
		for i, b := range fleet {
			d := b.Next()
			if d < bound/2 || d >= bound {
				t.Fatalf("attempt %d: wait %s, want within [%s, %s)", attempt, d, bound/2, bound)
			}
			buckets[int(d*10/bound)]++
			at[i] += d
		}
		// The window [bound/2, bound) has five tenths; uniform jitter puts
		// about 200 agents in each, and never most of them in one.
		if len(buckets) != 5 {
			t.Errorf("attempt %d: waits fill %d of the window's 5 tenths: %v", attempt, len(buckets), buckets)
		}
		for tenth, n := range buckets {
			if n > agents/3 {
				t.Errorf("attempt %d: %d of %d agents retry in tenth %d of the window", attempt, n, agents, tenth)
			}
		}
		sorted := slices.Sorted(slices.Values(at))
		if spread := sorted[agents-1] - sorted[0]; spread < bound/3 {
			t.Errorf("attempt %d: the fleet's attempts all fall within %s", attempt, spread)
		}
		t.Logf("attempt %d: %d agents retry from %s to %s after the outage, per tenth of the window %v",
			attempt, agents, sorted[0].Round(time.Millisecond), sorted[agents-1].Round(time.Millisecond), buckets)
	}
}

func TestBackoffDoublesToItsCapAndResets(t *testing.T) {
	b := New(100*time.Millisecond, time.Second)
	for i, bound := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		bound *= time.Millisecond
		if d := b.Next(); d < bound/2 || d >= bound {
			t.Errorf("wait %d is %s, want within [%s, %s)", i+1, d, bound/2, bound)
		}
	}
	b.Reset()
	if d := b.Next(); d >= 100*time.Millisecond {
		t.Errorf("after Reset the first wait is %s, want under 100ms", d)
	}
}

func TestWaitEndsOnWakeOrCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wake := make(chan struct{}, 1)
	wake <- struct{}{}
	if !New(time.Hour, time.Hour).Wait(ctx, wake) {
		t.Error("Wait ignored the wake-up")
	}
	done, stop := context.WithCancel(ctx)
	stop()
	if New(time.Hour, time.Hour).Wait(done, nil) {
		t.Error("Wait went on after its context ended")
	}
	if !Sleep(ctx, time.Millisecond, nil) {
		t.Error("Sleep reported a cancelled context")
	}
}
