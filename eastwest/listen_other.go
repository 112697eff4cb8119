//go:build !linux

package eastwest

// deferAccept is Linux only.
func deferAccept(uintptr) error { return nil }
