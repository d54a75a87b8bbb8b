//go:build race

package mixerless_test

// raceEnabled: the race detector makes sync.Pool drop objects at random
// (the handler's scratch, the sinks' batches), so allocation counts under
// it measure the pools, not the code.
const raceEnabled = true
