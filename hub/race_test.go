//go:build race

package hub_test

// raceSlowdown scales time bounds that CPU-bound work (TLS handshakes)
// sets: the race detector makes it several times slower.
const raceSlowdown = 3
