package hub_test

import (
	"testing"
	"time"

	"github.com/federate/federate/gossip"
	"github.com/federate/federate/internal/fedtest"
)

// A change relayed to several clusters is encoded once: every other
// cluster's stream sends the encoding the first one made, so the hub's
// cost per change does not grow with the number of subscribers.
func TestRelayEncodesAnUpdateOnceForAllSubscribers(t *testing.T) {
	t.Parallel()
	tm := fedtest.StartCoffeeShop(t, gossip.Timers{})
	tm.AddCluster("north").Update(t, fedtest.CoffeeService("north", "pastry", 1, 18084))
	for _, c := range []string{"east", "west", "central", "north"} {
		fedtest.Eventually(t, 10*time.Second, c+" converged", func() bool { return tm.Converged(c) })
	}
	sends0, encodes0 := tm.Hub.RelayEncodings()

	tm.Member("east").Update(t, fedtest.CoffeeService("east", "order", 3, 18080))
	for _, c := range []string{"west", "central", "north"} {
		fedtest.Eventually(t, 10*time.Second, c+" holds east's third endpoint", func() bool {
			return len(fedtest.EndpointsOf(tm.Member(c).Member, "east", "order")) == 3
		})
	}
	// Three subscribers get each update of east; each encoding is sent
	// by all three streams.
	var sends, encodes int64
	fedtest.Eventually(t, 10*time.Second, "every subscriber sent east's change", func() bool {
		s, e := tm.Hub.RelayEncodings()
		sends, encodes = s-sends0, e-encodes0
		return encodes >= 1 && sends >= 3*encodes
	})
	t.Logf("%d updates encoded, sent %d times", encodes, sends)
}
