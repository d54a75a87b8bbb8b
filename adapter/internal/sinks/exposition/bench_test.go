package exposition_test

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/exposition"
)

// sixLabels is the shape of the performance targets: 6 string dimensions.
var sixLabels = []string{"source_workload", "destination_workload", "destination_service", "request_method", "response_code", "reporter"}

type shape struct {
	name   string
	labels []string
}

var shapes = []shape{{"6labels", sixLabels}, {"istio20", istioHTTPLabels}}

func counterOf(labels []string) *sinks.Metric {
	return &sinks.Metric{Namespace: "istio", Name: "requests_total", Description: "requests", Kind: sinks.Counter, LabelNames: labels}
}

func histOf(labels []string) *sinks.Metric {
	return &sinks.Metric{Namespace: "istio", Name: "request_duration_seconds", Description: "latency", Kind: sinks.Distribution,
		LabelNames: labels, Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}
}

// batches builds batches of size samples over n distinct series; label
// values are about 10 bytes.
func batches(b sinks.Binding, labels []string, n, size int) []*sinks.Batch {
	var out []*sinks.Batch
	for start := 0; start < n; start += size {
		bt := &sinks.Batch{Time: time.Unix(1600000000, 0)}
		for i := start; i < min(start+size, n); i++ {
			values := make([][]byte, len(labels))
			for j := range values {
				values[j] = []byte("value-" + strconv.Itoa(j))
			}
			values[0] = []byte("app-" + strconv.Itoa(i%1000))
			values[1] = []byte("svc-" + strconv.Itoa(i/1000))
			bt.Add(b, 1, values)
		}
		out = append(out, bt)
	}
	return out
}

func newBenchExposition(b *testing.B) *exposition.Sink {
	e := exposition.New(sinks.Env{Tick: time.Hour})
	b.Cleanup(func() { _ = e.Close(context.Background()) })
	return e
}

func fill(b *testing.B, m *sinks.Metric, n int) *exposition.Sink {
	e := newBenchExposition(b)
	bind, err := e.Bind(m)
	if err != nil {
		b.Fatal(err)
	}
	for _, bt := range batches(bind, m.LabelNames, n, 1000) {
		e.Consume(bt)
	}
	return e
}

// BenchmarkConsume measures instances per second into the registry: batches
// of 1000 samples over 10k existing series (the steady state).
func BenchmarkConsume(b *testing.B) {
	for _, sh := range shapes {
		for _, m := range []*sinks.Metric{counterOf(sh.labels), histOf(sh.labels)} {
			b.Run(sh.name+"/"+m.Kind.String(), func(b *testing.B) {
				e := newBenchExposition(b)
				bind, err := e.Bind(m)
				if err != nil {
					b.Fatal(err)
				}
				bs := batches(bind, m.LabelNames, 10000, 1000)
				for _, bt := range bs {
					e.Consume(bt)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					e.Consume(bs[i%len(bs)])
				}
				b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "instances/s")
			})
		}
	}
}

// BenchmarkScrape measures writing the whole exposition (what /metrics adds
// after the adapter's own metrics), without compression.
func BenchmarkScrape(b *testing.B) {
	for _, sh := range shapes {
		for _, n := range []int{10000, 100000} {
			for _, m := range []*sinks.Metric{counterOf(sh.labels), histOf(sh.labels)} {
				b.Run(fmt.Sprintf("%s/%s/%d", sh.name, m.Kind, n), func(b *testing.B) {
					e := fill(b, m, n)
					var w countingWriter
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if err := e.WriteText(&w); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(w.n)/float64(b.N)/1e6, "MB/scrape")
				})
			}
		}
	}
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return io.Discard.Write(p)
}

// BenchmarkMemoryPerSeries reports the heap each exposed series costs,
// after a scrape so that nothing is left to build lazily.
func BenchmarkMemoryPerSeries(b *testing.B) {
	const n = 100000
	for _, sh := range shapes {
		for _, m := range []*sinks.Metric{counterOf(sh.labels), histOf(sh.labels)} {
			b.Run(sh.name+"/"+m.Kind.String(), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					var before, after runtime.MemStats
					runtime.GC()
					runtime.ReadMemStats(&before)
					e := fill(b, m, n)
					if err := e.WriteText(io.Discard); err != nil {
						b.Fatal(err)
					}
					runtime.GC()
					runtime.ReadMemStats(&after)
					b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/series")
					runtime.KeepAlive(e)
				}
			})
		}
	}
}
