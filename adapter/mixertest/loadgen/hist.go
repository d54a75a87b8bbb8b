package loadgen

import (
	"math/bits"
	"time"
)

// subBits sets the precision of Histogram: each power of two is split into 2^subBits
// buckets, so a recorded value is known to within 1/2^subBits (0.8%).
const subBits = 7

const (
	subCount = 1 << subBits
	// Values up to 2^(subBits+maxExp) ns (about 9 minutes with 32) are recorded; larger ones
	// land in the last bucket.
	maxExp     = 32
	numBuckets = (maxExp + 1) * subCount
)

// Histogram is a fixed log-linear histogram of durations, in the manner of HdrHistogram:
// recording is an index computation and an increment, with no allocation and no lock (each
// worker keeps its own and they are merged at the end).
type Histogram struct {
	counts [numBuckets]uint64
	total  uint64
	max    time.Duration
}

func bucketOf(ns uint64) int {
	if ns < subCount {
		return int(ns)
	}
	exp := bits.Len64(ns) - subBits // >= 1
	idx := exp*subCount + int(ns>>(exp-1)) - subCount
	if idx >= numBuckets {
		return numBuckets - 1
	}
	return idx
}

// upper is the largest value that falls in bucket i.
func upper(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	exp := i / subCount
	mant := uint64(i%subCount + subCount)
	return (mant+1)<<(exp-1) - 1
}

// Record adds one duration.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.total++
	if d > h.max {
		h.max = d
	}
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.total += o.total
	h.max = max(h.max, o.max)
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.total }

// Max is the largest recorded value, exactly.
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile returns the value below which a fraction q of the recorded values fall, as the
// upper edge of its bucket (never above Max).
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(q*float64(h.total) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			if i == numBuckets-1 {
				return h.max // the overflow bucket has no upper edge
			}
			return min(time.Duration(upper(i)), h.max)
		}
	}
	return h.max
}
