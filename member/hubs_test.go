package member

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The list a member dials keeps the addresses it joined with first, in the
// order failovers left them, then the replicas the hub named; a replica the
// hub no longer names is dropped unless the member joined with it.
func TestMergeHubs(t *testing.T) {
	for _, c := range []struct {
		current, joined string
		learned         []string
		want            string
	}{
		{"", "a:1", nil, "a:1"},
		{"a:1", "a:1", []string{"a:1", "b:1", "c:1"}, "a:1,b:1,c:1"},
		// A failover moved a:1 to the end; learning keeps that order.
		{"b:1,c:1,a:1", "a:1", []string{"a:1", "b:1", "c:1"}, "b:1,c:1,a:1"},
		// c:1 left the hub; d:1 came.
		{"b:1,c:1,a:1", "a:1", []string{"a:1", "b:1", "d:1"}, "b:1,a:1,d:1"},
		// The hub no longer names the joined address: it is kept, last tried.
		{"a:1,b:1", "a:1", []string{"b:1"}, "a:1,b:1"},
		{"a:1, b:1", "a:1, b:1", []string{"b:1", "a:1"}, "a:1,b:1"},
	} {
		if got := mergeHubs(c.current, c.joined, c.learned); got != c.want {
			t.Errorf("mergeHubs(%q, %q, %q) = %q, want %q", c.current, c.joined, c.learned, got, c.want)
		}
	}
}

// What a hub names as its replicas is checked before the member dials it.
func TestValidHubsDropsWhatIsNotAnAddress(t *testing.T) {
	got := validHubs([]string{"hub-0.hub:7443", "", "no-port", ":7443", "a,b:1", "a b:1", "hub-0.hub:7443", "[::1]:7443", strings.Repeat("h", 300) + ":1", "10.0.0.1:", "[::]:7443", "0.0.0.0:7443"})
	if want := []string{"hub-0.hub:7443", "[::1]:7443"}; !slices.Equal(got, want) {
		t.Errorf("validHubs = %q, want %q", got, want)
	}
	var many []string
	for i := range 1000 {
		many = append(many, fmt.Sprintf("hub-%d:7443", i))
	}
	if got := validHubs(many); len(got) != maxLearnedHubs {
		t.Errorf("a hub naming 1000 replicas has the member keep %d, want %d", len(got), maxLearnedHubs)
	}
}
