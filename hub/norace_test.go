//go:build !race

package hub_test

// raceSlowdown scales time bounds that CPU-bound work (TLS handshakes)
// sets: 1 without the race detector.
const raceSlowdown = 1
