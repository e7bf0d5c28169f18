//go:build race

package remoting

// raceEnabled: the test binary runs under the race detector.
const raceEnabled = true
