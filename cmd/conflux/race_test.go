//go:build race

package main

// raceEnabled: the test binary has the race detector, so the binary under
// test gets it too.
const raceEnabled = true
