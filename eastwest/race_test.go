//go:build race

package eastwest

const raceEnabled = true
