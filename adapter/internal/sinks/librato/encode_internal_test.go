package librato

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
)

// pointOf makes a point as identify would; a source equal to the
// encoder's top-level one ("src" in these tests) is left out of the prefix.
func pointOf(kind sinks.Kind, name string, tags map[string]string, source string, values ...float64) point {
	own := source
	if own == "src" {
		own = ""
	}
	p := point{kind: kind, id: &ident{key: fmt.Sprint(kind, name, tags, source), name: name, tags: tags, source: source,
		prefix: prefixOf(name, tags, own)}}
	for i, v := range values {
		p.acc.add(v, uint64(i+1))
	}
	return p
}

func TestEncodeTaggedShapes(t *testing.T) {
	tags := map[string]string{"path": "/a"}
	points := []point{
		pointOf(sinks.Counter, "c", tags, "", 1, 2, 3),
		pointOf(sinks.Gauge, "g", tags, "", 5, 1),
		pointOf(sinks.Distribution, "d", tags, "", 4, 1, 7),
	}
	e := encoder{maxUnits: 1000, maxBytes: 1 << 20, time: 1600000020, period: 60}
	reqs := e.encode(points)
	require.Len(t, reqs, 1)
	require.JSONEq(t, `{"time":1600000020,"period":60,"measurements":[
		{"name":"c","tags":{"path":"/a"},"value":6},
		{"name":"g","tags":{"path":"/a"},"value":1},
		{"name":"d","tags":{"path":"/a"},"count":3,"sum":12,"min":1,"max":7,"last":7}]}`, string(reqs[0].body))
	require.Equal(t, 3, reqs[0].Units())
	require.Equal(t, 8, reqs[0].Instances(), "every instance of every point")
}

func TestEncodeLegacyShapes(t *testing.T) {
	points := []point{
		pointOf(sinks.Counter, "c", nil, "src", 1, 2),
		pointOf(sinks.Gauge, "g", nil, "src:path._a", 5, 1),
		pointOf(sinks.Distribution, "d", nil, "src", 3, 4),
		pointOf(sinks.Distribution, "big", nil, "src", 1e100),
	}
	points[0].total = 42
	e := encoder{legacy: true, maxUnits: 300, maxBytes: 1 << 20, time: 1600000020, source: "src"}
	reqs := e.encode(points)
	require.Len(t, reqs, 1)
	require.JSONEq(t, `{"measure_time":1600000020,"source":"src",
		"gauges":[{"name":"g","value":1,"source":"src:path._a"},
		          {"name":"d","count":2,"sum":7,"min":3,"max":4,"sum_squares":25},
		          {"name":"big","count":1,"sum":1e100,"min":1e100,"max":1e100}],
		"counters":[{"name":"c","value":42}]}`, string(reqs[0].body),
		"counters carry the cumulative total; sum_squares out of range is left out")
}

func TestEncodeDropsValuesOutOfRange(t *testing.T) {
	dropped := map[string]int{}
	e := encoder{maxUnits: 1000, maxBytes: 1 << 20, drop: func(reason string, n int) { dropped[reason] += n }}
	reqs := e.encode([]point{
		pointOf(sinks.Counter, "ok", map[string]string{"a": "b"}, "", 1),
		pointOf(sinks.Distribution, "huge", map[string]string{"a": "b"}, "", 1e127, 1),
		pointOf(sinks.Gauge, "neg", map[string]string{"a": "b"}, "", -2e126),
	})
	require.Equal(t, map[string]int{DropValueOutOfRange: 3}, dropped, "two instances of huge, one of neg")
	require.Len(t, reqs, 1)
	require.Equal(t, 1, reqs[0].Units())
}

func TestEncodeSplitsByBytesExactly(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		for _, maxBytes := range []int{1024, 1500, 4096} {
			t.Run(fmt.Sprintf("legacy=%v/%d", legacy, maxBytes), func(t *testing.T) {
				var points []point
				for i := range 300 {
					kind := []sinks.Kind{sinks.Counter, sinks.Gauge, sinks.Distribution}[i%3]
					points = append(points, pointOf(kind, fmt.Sprintf("metric.%d", i),
						map[string]string{"path": fmt.Sprintf("/p/%d", i*7919)}, fmt.Sprintf("src:%d", i), float64(i)))
				}
				e := encoder{legacy: legacy, maxUnits: 1000, maxBytes: maxBytes, time: 1600000020, period: 60, source: "src"}
				reqs := e.encode(points)
				units := 0
				for i, r := range reqs {
					require.LessOrEqual(t, len(r.body), maxBytes)
					require.True(t, json.Valid(r.body))
					units += r.Units()
					if i < len(reqs)-1 {
						// Not split too early: the next request's first
						// measurement (and a comma) would not have fitted. A
						// legacy request budgets for both of its lists even
						// when it uses one.
						slack := 0
						if legacy {
							slack = len(`,"counters":[]`)
						}
						require.Greater(t, len(r.body)+measurementLen(t, &e, &points[units])+1, maxBytes-slack)
					}
				}
				require.Equal(t, 300, units)
			})
		}
	}
}

func measurementLen(t *testing.T, e *encoder, p *point) int {
	b, _, ok := e.measurement(p)
	require.True(t, ok)
	return len(b)
}

func TestEncodeSendsAnOversizedMeasurementAlone(t *testing.T) {
	tags := map[string]string{}
	for i := range 20 {
		tags[fmt.Sprintf("t%02d", i)] = fmt.Sprintf("%0100d", i)
	}
	e := encoder{maxUnits: 1000, maxBytes: 1024}
	reqs := e.encode([]point{pointOf(sinks.Gauge, "small", map[string]string{"a": "b"}, "", 1),
		pointOf(sinks.Gauge, "big", tags, "", 1), pointOf(sinks.Gauge, "small2", map[string]string{"a": "b"}, "", 1)})
	require.Len(t, reqs, 3)
	require.Greater(t, len(reqs[1].body), 1024, "it cannot be split, and is not dropped")
	require.Equal(t, 1, reqs[1].Units())
}

func TestMergeCombinesSameIdentity(t *testing.T) {
	id := &ident{key: "k", name: "m"}
	other := &ident{key: "other", name: "m"}
	a := point{kind: sinks.Distribution, id: id}
	a.acc.add(5, 10)
	a.acc.add(1, 11)
	b := point{kind: sinks.Distribution, id: id}
	b.acc.add(9, 12)
	b.acc.add(3, 9) // older than a's last
	c := point{kind: sinks.Distribution, id: other}
	c.acc.add(2, 1)
	out := merge([]point{a, c, b})
	require.Len(t, out, 2)
	require.Equal(t, acc{n: 4, sum: 18, min: 1, max: 9, last: 1, sumSq: 25 + 1 + 81 + 9, seq: 11}, out[0].acc,
		"the latest update's value is last")
	require.Equal(t, other, out[1].id)
}

func TestAccStartsFromTheFirstValue(t *testing.T) {
	var a acc
	a.add(-3, 1)
	require.Equal(t, acc{n: 1, sum: -3, min: -3, max: -3, last: -3, sumSq: 9, seq: 1}, a, "min and max are not 0")
	a.add(-5, 2)
	require.Equal(t, acc{n: 2, sum: -8, min: -5, max: -3, last: -5, sumSq: 34, seq: 2}, a)
}

func TestFloorTo(t *testing.T) {
	require.Equal(t, int64(1600000020), floorTo(1600000079, 60))
	require.Equal(t, int64(1600000080), floorTo(1600000080, 60))
	require.Equal(t, int64(-60), floorTo(-1, 60))
}

// BenchmarkEncode is the cost of closing a period, per measurement: JSON
// encoding and splitting of summaries with ten tags.
func BenchmarkEncode(b *testing.B) {
	const n = 10000
	points := make([]point, n)
	for i := range points {
		tags := map[string]string{"reporter": "destination", "destination_service": fmt.Sprintf("svc-%d.default.svc.cluster.local", i)}
		for j := range 8 {
			tags[fmt.Sprintf("label_%d", j)] = fmt.Sprintf("value-%d", (i+j)%13)
		}
		points[i] = pointOf(sinks.Distribution, "istio.request_duration", tags, "", 12, 40, 7)
	}
	e := encoder{maxUnits: MaxMeasurementsPerRequest, maxBytes: 1 << 20, time: 1600000020, period: 60}
	b.ReportAllocs()
	for b.Loop() {
		e.encode(points)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/measurement")
}

func TestAppendFloatMatchesEncodingJSON(t *testing.T) {
	for _, v := range []float64{0, 1, -1, 0.5, 1235, 2250.125, 1e-6, 9.99e-7, 1e-7, 1.5e-300, 1e20, 1e21, 123456789e15,
		-3.25e-9, 1e100, -1e126, 0.1, 1.0 / 3} {
		want, err := json.Marshal(v)
		require.NoError(t, err)
		require.Equal(t, string(want), string(appendFloat(nil, v)), "%g", v)
	}
}
