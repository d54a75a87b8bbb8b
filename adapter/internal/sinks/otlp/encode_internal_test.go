package otlp

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/config"
)

// BenchmarkEncode is what an export costs before the network: data points
// made from series, marshalled into requests under the limits (2000
// points, 3 MiB), per series of 9 Istio-sized attributes.
func BenchmarkEncode(b *testing.B) {
	for _, kind := range []sinks.Kind{sinks.Counter, sinks.Distribution} {
		b.Run(kind.String(), func(b *testing.B) {
			labels := []string{"reporter", "source_workload", "source_workload_namespace", "destination_workload",
				"destination_workload_namespace", "destination_service", "request_protocol", "response_code", "connection_security_policy"}
			info := newMetricInfo(&sinks.Metric{Namespace: "istio", Name: "requests", Kind: kind, LabelNames: labels, Buckets: config.DefaultBuckets})
			const series = 10000
			points := make([]point, series)
			start := time.Unix(1700000000, 0).UnixNano()
			for i := range points {
				values := []string{"destination", fmt.Sprintf("productpage-v%d", i%3+1), "default", fmt.Sprintf("reviews-v%d", i%7+1),
					"default", fmt.Sprintf("svc-%d.default.svc.cluster.local", i), "http", "200", "mutual_tls"}
				attrs := attributes(info, values)
				p := point{info: info, attrs: attrs, attrsSize: attributesSize(attrs), start: start, time: start + int64(time.Minute), instances: 1}
				for v := 0; v < 5; v++ {
					p.record(info, float64(v)/10)
				}
				points[i] = p
			}
			s := settings{maxPoints: config.DefaultOtlpMaxDataPoints, maxBytes: config.DefaultOtlpMaxRequestBytes,
				resource: map[string]string{ServiceName: "meshmetrics", ServiceInstanceID: "bench-0"}}
			bytes, requests := 0, 0
			build := newBuilder(s, "bench", func(r *request) { bytes += len(r.body); requests++ })
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				for i := range points {
					build.add(&points[i])
				}
				build.flush()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*series), "ns/series")
			b.ReportMetric(float64(bytes)/float64(b.N*series), "B/point")
		})
	}
}

// TestPointSizeBoundsTheEncodedSize: the builder's estimate is never
// below what the generated code encodes, so requests stay under the cap.
func TestPointSizeBoundsTheEncodedSize(t *testing.T) {
	for _, kind := range []sinks.Kind{sinks.Counter, sinks.Gauge, sinks.Distribution} {
		info := newMetricInfo(&sinks.Metric{Namespace: "istio", Name: "x", Kind: kind, LabelNames: []string{"a", "b"}, Buckets: config.DefaultBuckets})
		attrs := attributes(info, []string{"some value", "é\xff"})
		p := point{info: info, attrs: attrs, attrsSize: attributesSize(attrs), start: 1, time: 2}
		p.record(info, -3)
		p.record(info, 7)
		var got int
		b := newBuilder(settings{maxPoints: 10, maxBytes: 1 << 20}, "v", func(r *request) { got = len(r.body) })
		b.add(&p)
		estimate := b.envelope + b.size
		b.flush()
		if estimate < got {
			t.Fatalf("%s: estimated %d bytes, encoded %d", kind, estimate, got)
		}
	}
}
