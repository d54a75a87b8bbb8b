package prometheus_test

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	mmprom "github.com/meshmetrics/meshmetrics/adapter/prometheus"
	"github.com/meshmetrics/meshmetrics/adapter/sink"
)

// istioLike is a counter with Istio's 20 request labels.
func istioLike() *sink.Metric {
	return &sink.Metric{Namespace: "istio", Name: "requests_total", Description: "requests", Kind: sink.Counter, LabelNames: istioHTTPLabels}
}

func istioHist() *sink.Metric {
	return &sink.Metric{Namespace: "istio", Name: "request_duration_seconds", Description: "latency", Kind: sink.Distribution,
		LabelNames: istioHTTPLabels, Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}
}

// batches builds batches of size samples over n distinct series.
func batches(b sink.Binding, n, size int) []*sink.Batch {
	var out []*sink.Batch
	for start := 0; start < n; start += size {
		bt := &sink.Batch{Time: time.Unix(1600000000, 0)}
		for i := start; i < min(start+size, n); i++ {
			values := make([][]byte, len(istioHTTPLabels))
			for j := range values {
				values[j] = []byte("value-" + istioHTTPLabels[j])
			}
			values[1] = []byte("app-" + strconv.Itoa(i%1000))
			values[6] = []byte("svc-" + strconv.Itoa(i/1000))
			bt.Add(b, 1, values)
		}
		out = append(out, bt)
	}
	return out
}

func newBenchExposition(b *testing.B) (*mmprom.Exposition, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	e, err := mmprom.NewExposition(sink.Env{Tick: time.Hour}, reg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close(context.Background()) })
	return e, reg
}

// BenchmarkConsume measures instances per second into the registry: batches
// of 1000 samples over 10k existing series (the steady state).
func BenchmarkConsume(b *testing.B) {
	for _, m := range []*sink.Metric{istioLike(), istioHist()} {
		b.Run(m.Kind.String(), func(b *testing.B) {
			e, _ := newBenchExposition(b)
			bind, err := e.Bind(m)
			if err != nil {
				b.Fatal(err)
			}
			bs := batches(bind, 10000, 1000)
			for _, bt := range bs {
				e.Consume(bt)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				e.Consume(bs[i%len(bs)])
			}
			b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "instances/s")
		})
	}
}

// BenchmarkScrape measures one /metrics scrape: Gather plus text encoding.
func BenchmarkScrape(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		for _, m := range []*sink.Metric{istioLike(), istioHist()} {
			b.Run(fmt.Sprintf("%s/%d", m.Kind, n), func(b *testing.B) {
				e, reg := newBenchExposition(b)
				bind, err := e.Bind(m)
				if err != nil {
					b.Fatal(err)
				}
				for _, bt := range batches(bind, n, 1000) {
					e.Consume(bt)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					mfs, err := reg.Gather()
					if err != nil {
						b.Fatal(err)
					}
					enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
					for _, mf := range mfs {
						if err := enc.Encode(mf); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// BenchmarkMemoryPerSeries reports the heap each exposed series costs
// (Istio's 20 labels, values of about 10 bytes, after one scrape so that
// nothing is left to build lazily).
func BenchmarkMemoryPerSeries(b *testing.B) {
	const n = 100000
	for _, m := range []*sink.Metric{istioLike(), istioHist()} {
		b.Run(m.Kind.String(), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				e, reg := newBenchExposition(b)
				bind, err := e.Bind(m)
				if err != nil {
					b.Fatal(err)
				}
				for _, bt := range batches(bind, n, 1000) {
					e.Consume(bt)
				}
				if _, err := reg.Gather(); err != nil {
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
