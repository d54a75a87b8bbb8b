//go:build !race

package mixerless_test

const raceEnabled = false
