// Package cumulative is the value of one Prometheus series as both
// Prometheus sinks keep it: a counter's running total, a gauge's last value,
// or a histogram's bucket counts, sum and count.
package cumulative

import (
	"sort"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
)

// Value is the state of one series. The zero value is an empty counter or
// gauge; a histogram's needs NewValue.
type Value struct {
	// Sum is a counter's total, a gauge's value or a histogram's sum.
	Sum float64
	// Count is the number of observations of a histogram.
	Count uint64
	// Buckets are a histogram's observations per finite bucket, not
	// cumulated (Buckets[i] counts bounds[i-1] < v <= bounds[i]); the +Inf
	// bucket is Count.
	Buckets []uint64
}

// NewValue makes the state of a new series of m.
func NewValue(m *sinks.Metric) Value {
	if m.Kind == sinks.Distribution {
		return Value{Buckets: make([]uint64, len(m.Buckets))}
	}
	return Value{}
}

// Record applies one sample: a counter adds, a gauge sets, a distribution
// observes into the bucket whose upper bound is the first >= v.
func (v *Value) Record(kind sinks.Kind, bounds []float64, x float64) {
	switch kind {
	case sinks.Counter:
		v.Sum += x
	case sinks.Gauge:
		v.Sum = x
	default:
		if i := sort.SearchFloat64s(bounds, x); i < len(v.Buckets) {
			v.Buckets[i]++
		}
		v.Sum += x
		v.Count++
	}
}

// AppendCumulative appends the cumulative count of each finite bucket to dst.
func (v *Value) AppendCumulative(dst []uint64) []uint64 {
	var c uint64
	for _, n := range v.Buckets {
		c += n
		dst = append(dst, c)
	}
	return dst
}
