package probe_test

import (
	"strings"
	"testing"
	"time"

	"github.com/federate/federate/internal/fedtest"
	"github.com/federate/federate/internal/probe"
)

// A loop that has not started passes; one that beat recently passes; one
// whose last beat is older than the stall limit fails, naming the loop.
func TestHeartbeatTellsAWedgedLoop(t *testing.T) {
	t.Parallel()
	var h probe.Heartbeat
	if err := h.Check("the maintenance loop", time.Nanosecond); err != nil {
		t.Errorf("before the first beat: %v", err)
	}
	h.Beat()
	if err := h.Check("the maintenance loop", time.Hour); err != nil {
		t.Errorf("right after a beat: %v", err)
	}
	fedtest.Eventually(t, time.Second, "the check failing past a 1ms stall limit", func() bool {
		err := h.Check("the maintenance loop", time.Millisecond)
		return err != nil && strings.Contains(err.Error(), "the maintenance loop last ran") && strings.Contains(err.Error(), "stuck")
	})
}
