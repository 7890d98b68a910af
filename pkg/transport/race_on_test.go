//go:build race

package transport

// raceEnabled: built with -race, whose runtime allocates on its own.
const raceEnabled = true
