package probe

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Heartbeat tells a wedged loop from a quiet one: the loop beats on every
// turn, and Check fails once the last beat is older than stall. Before the
// first beat it passes: a loop that has not started is not wedged.
type Heartbeat struct{ last atomic.Int64 }

// Beat records a turn of the loop.
func (h *Heartbeat) Beat() { h.last.Store(time.Now().UnixNano()) }

// Check returns an error naming what when the last beat is older than stall.
func (h *Heartbeat) Check(what string, stall time.Duration) error {
	last := h.last.Load()
	if last == 0 {
		return nil
	}
	if since := time.Since(time.Unix(0, last)); since > stall {
		return fmt.Errorf("%s last ran %s ago (limit %s): it is stuck", what, since.Round(time.Second), stall)
	}
	return nil
}
