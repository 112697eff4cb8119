package fedtest

import (
	"testing"
	"time"
)

// EventuallyNil polls f, as Eventually does, until it returns nil or the
// timeout passes; a timeout shows f's last error.
func EventuallyNil(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	var last error
	defer func() {
		if last != nil && t.Failed() {
			t.Logf("%s: last error: %v", what, last)
		}
	}()
	Eventually(t, timeout, what, func() bool { last = f(); return last == nil })
}
