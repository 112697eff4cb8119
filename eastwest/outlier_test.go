package eastwest

import (
	"fmt"
	"testing"
	"time"
)

func TestOutliers(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	o := newOutliers(OutlierConfig{ConsecutiveFailures: 3, EjectionTime: time.Minute}, clock.Now)
	const addr = "10.0.0.1:15443"

	// A success between failures forgives them.
	failures := func(n int) (ejected bool) {
		for range n {
			ejected = o.failed(addr)
		}
		return ejected
	}
	failures(2)
	o.succeeded(addr)
	if failures(2) || o.ejected(addr) {
		t.Fatal("ejected after two failures in a row")
	}
	if !failures(1) || !o.ejected(addr) {
		t.Fatal("not ejected after three failures in a row")
	}
	// Failures while ejected neither extend nor repeat the ejection.
	if o.failed(addr) {
		t.Fatal("ejected twice")
	}
	clock.Advance(time.Minute)
	if o.ejected(addr) {
		t.Fatal("still ejected after the ejection time")
	}
	// Back with a clean slate: it takes three failures again.
	if failures(2) || !failures(1) {
		t.Fatal("the count did not restart after the ejection")
	}

	// Endpoints that failed once, long ago, are forgotten when the table is full.
	for i := range maxTracked {
		o.failed(fmt.Sprintf("10.1.%d.%d:80", i/256, i%256))
	}
	clock.Advance(2 * time.Minute)
	o.failed("10.2.0.1:80")
	o.mu.Lock()
	n := len(o.failing)
	o.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d endpoints tracked, want 1", n)
	}
}
