package logging

import (
	"strconv"
	"unicode/utf8"
)

// MaxCallerValue is how much of a value a caller controls (an id, a name,
// a message of theirs) a log line shows.
const MaxCallerValue = 256

// MaxMessage is how much of a message built from what a caller sent (an
// error listing a config's problems) a log line or a status shows.
const MaxMessage = 2048

// Truncate cuts s to at most n bytes, at a UTF-8 boundary, saying how long
// it was: a log line never carries more of a caller's value than that.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	end := n
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end] + "...(" + strconv.Itoa(len(s)) + " bytes)"
}
