package controlplane_test

import (
	"os"
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(callerEnv) != "" {
		os.Exit(runCallerProcess())
	}
	fedtest.Main(m)
}

// testTimers declare a silent cluster stale, dead and expired within
// seconds.
var testTimers = gossip.Timers{StaleAfter: 3 * time.Second, DeadAfter: 5 * time.Second, ExpireAfter: 8 * time.Second}
