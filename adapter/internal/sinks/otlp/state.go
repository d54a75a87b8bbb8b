package otlp

import (
	"math"
	"sort"
	"strings"
	"unicode/utf8"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/config"
)

// metricInfo is what every series of one metric definition shares.
type metricInfo struct {
	name, description, unit string
	kind                    sinks.Kind
	// bounds are a distribution's explicit bounds (none for an implicit
	// metric: one bucket, with count, sum, min and max).
	bounds []float64
	// labels are the attribute keys, in the order of the samples' values;
	// nil for an implicit metric, whose samples carry name/value pairs.
	labels   []string
	implicit bool
}

func newMetricInfo(m *sinks.Metric) *metricInfo {
	return &metricInfo{
		name:        MetricName(m),
		description: m.Description,
		unit:        Unit(m.DurationUnit),
		kind:        m.Kind,
		bounds:      m.Buckets,
		labels:      m.LabelNames,
		implicit:    m.Implicit,
	}
}

// Unit is the OTLP unit (UCUM) of a metric whose duration unit is set:
// durations are converted to it. A metric without one has no unit, since
// its values may be anything (sizes, counts).
func Unit(u config.DurationUnit) string {
	switch u {
	case config.DurationUnit_SECONDS:
		return "s"
	case config.DurationUnit_MILLISECONDS:
		return "ms"
	case config.DurationUnit_MICROSECONDS:
		return "us"
	case config.DurationUnit_NANOSECONDS:
		return "ns"
	}
	return ""
}

// state is one series: its attributes and what it has gathered, since its
// start (cumulative) or since its previous point (delta).
type state struct {
	info  *metricInfo
	attrs []*commonpb.KeyValue
	// attrsSize is the encoded size of attrs, computed once: the request
	// builder adds up point sizes without sizing every point again.
	attrsSize int
	// start is the start time of the series' next point, in Unix
	// nanoseconds: when the series was created (cumulative; again after it
	// expired and came back), or the end of its previous point (delta).
	start int64
	acc
	// pending counts the samples since the previous export.
	pending int
}

// acc is an aggregate: a counter's sum, a gauge's last value, or a
// histogram's bucket counts (len(bounds)+1, the last the overflow bucket),
// count, sum, min and max.
type acc struct {
	sum, last float64
	count     uint64
	buckets   []uint64
	min, max  float64
	// negative: an observation was below zero, so the histogram's sum is
	// left out (the OTLP data model keeps sum for non-negative events).
	negative bool
}

func (a *acc) record(info *metricInfo, v float64) {
	switch info.kind {
	case sinks.Counter:
		a.sum += v
	case sinks.Gauge:
		a.last = v
	default:
		if a.buckets == nil {
			a.buckets = make([]uint64, len(info.bounds)+1)
		}
		// Bucket i holds bounds[i-1] < v <= bounds[i], as OTLP's
		// explicit bounds say; past the last bound, the overflow bucket.
		a.buckets[sort.SearchFloat64s(info.bounds, v)]++
		if a.count == 0 {
			a.min, a.max = v, v
		} else {
			a.min, a.max = math.Min(a.min, v), math.Max(a.max, v)
		}
		a.count++
		a.sum += v
		if v < 0 {
			a.negative = true
		}
	}
}

// reset empties a delta aggregate (a gauge keeps its last value).
func (a *acc) reset() {
	a.sum, a.count, a.negative = 0, 0, false
	clear(a.buckets)
}

// attributes makes a series' data-point attributes from its label values:
// one per non-empty value (an absent dimension is no attribute, as in the
// Prometheus sinks), or the name/value pairs of an implicit metric. Values
// are made valid UTF-8, which protobuf strings must be.
func attributes(info *metricInfo, values []string) []*commonpb.KeyValue {
	kv := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: validUTF8(k), Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: validUTF8(v)}}}
	}
	var out []*commonpb.KeyValue
	if info.implicit {
		for i := 0; i+1 < len(values); i += 2 {
			if values[i] != "" && values[i+1] != "" {
				out = append(out, kv(values[i], values[i+1]))
			}
		}
		return out
	}
	for i, name := range info.labels {
		if i < len(values) && values[i] != "" {
			out = append(out, kv(name, values[i]))
		}
	}
	return out
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
