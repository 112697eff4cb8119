// Package retry holds the one backoff that every retry loop in federate
// uses: apimachinery's wait.Backoff, exponential and jittered. Jitter
// matters more than growth here: a fleet of VM agents, gateways or
// members that lose the same server at the same moment must not all come
// back at the same moment, and then again together after each failure.
package retry

import (
	"context"
	"math"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// Backoff is a sequence of waits. Each is drawn uniformly from [d/2, d),
// where d starts at the first wait's bound and doubles up to the last's.
// A Backoff is used by one goroutine.
type Backoff struct {
	spec wait.Backoff
	cur  wait.Backoff
}

// New returns a backoff whose first wait is under first and whose waits
// stay under limit.
func New(first, limit time.Duration) *Backoff {
	limit = max(first, limit)
	// wait.Backoff adds jitter on top of its duration (d + rand*d*Jitter):
	// half the bound plus up to as much again keeps each wait under it.
	spec := wait.Backoff{
		Duration: first / 2,
		Factor:   2,
		Jitter:   1,
		Steps:    math.MaxInt32,
		Cap:      limit / 2,
	}
	return &Backoff{spec: spec, cur: spec}
}

// Next returns the next wait.
func (b *Backoff) Next() time.Duration { return b.cur.Step() }

// Reset starts the sequence again from the first wait, after a success.
func (b *Backoff) Reset() { b.cur = b.spec }

// Wait sleeps for the next wait; see Sleep.
func (b *Backoff) Wait(ctx context.Context, wake <-chan struct{}) bool {
	return Sleep(ctx, b.Next(), wake)
}

// Sleep waits for d, or until wake fires (a nil wake never does). It
// returns false if ctx ended first.
func Sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-wake:
		return true
	}
}
