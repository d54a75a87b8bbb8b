package librato

import (
	"math"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
)

// acc is what one series gathered since the last close of its period: every
// statistic any kind needs, so that the hot path has no branch on the kind.
// n is also the number of instances the point will represent, which is what
// makes the drop counters exact.
type acc struct {
	n        int64
	sum      float64
	min, max float64
	last     float64
	sumSq    float64
	// seq orders updates across series, so that merging two series that
	// sanitise to the same identity keeps the latest "last".
	seq uint64
}

func (a *acc) add(v float64, seq uint64) {
	if a.n == 0 {
		a.min, a.max = v, v
	} else {
		a.min, a.max = math.Min(a.min, v), math.Max(a.max, v)
	}
	a.n++
	a.sum += v
	a.sumSq += v * v
	a.last, a.seq = v, seq
}

func (a *acc) merge(b acc) {
	if b.n == 0 {
		return
	}
	if a.n == 0 {
		*a = b
		return
	}
	a.n += b.n
	a.sum += b.sum
	a.sumSq += b.sumSq
	a.min, a.max = math.Min(a.min, b.min), math.Max(a.max, b.max)
	if b.seq > a.seq {
		a.last, a.seq = b.last, b.seq
	}
}

// state is a series' entry in the registry.
type state struct {
	acc
	// id is the series' identity in Librato, worked out (and its
	// sanitisation counted) once, on the series' first close.
	id *ident
}

// ident is where a series lands in Librato.
type ident struct {
	// key is unique per Librato series of one kind: two registry series with
	// the same key are merged before sending.
	key    string
	name   string
	tags   map[string]string // tagged API
	source string            // legacy API
	// prefix is the measurement's constant JSON (prefixOf).
	prefix []byte
}

// point is one series' closed period, ready to encode.
type point struct {
	kind sinks.Kind
	id   *ident
	acc  acc
	// total is a legacy counter's cumulative value, set just before encoding.
	total float64
	// time is the point's own time (Unix seconds), set just before
	// encoding when it differs from its request's (timeOf).
	time int64
}

// merge folds points with the same identity into one, keeping first-seen
// order. Sanitising (truncation, replaced characters, lower-casing) can map
// two series onto one Librato series; sending both with the same time would
// let one overwrite the other, so they are combined here instead.
func merge(points []point) []point {
	if len(points) < 2 {
		return points
	}
	at := make(map[string]int, len(points))
	out := points[:0]
	for _, p := range points {
		if i, ok := at[p.id.key]; ok {
			out[i].acc.merge(p.acc)
			continue
		}
		at[p.id.key] = len(out)
		out = append(out, p)
	}
	return out
}
