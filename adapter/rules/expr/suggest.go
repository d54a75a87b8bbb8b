package expr

// Closest is the attribute of m nearest to a misspelt name (an edit
// distance of at most 2, ties broken by name), or "" when none is that
// close: what "did you mean" offers, for expressions and command lines
// alike.
func Closest(name string, m Manifest) string {
	best, bestD := "", 3
	for known, t := range m {
		if t == Unspecified {
			continue
		}
		if d := distance(name, known); d < bestD || (d == bestD && best != "" && known < best) {
			best, bestD = known, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
