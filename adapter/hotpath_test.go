package adapter_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/dedup"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/exposition"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/config"
)

// BenchmarkHotPath measures what an instance costs between the gRPC layer
// and the series: decode (wire), convert, map to a series and aggregate
// (the Prometheus exposition's registry). Requests are Mixer-shaped: 100
// instances of 6 string dimensions, one COUNTER. Each iteration waits for
// the sink to consume the request, so both goroutines' work is in the time.
func BenchmarkHotPath(b *testing.B) {
	for _, series := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("series=%d", series), func(b *testing.B) {
			set := sinks.NewSet(1<<30, time.Minute)
			expo := exposition.New(sinks.Env{Tick: time.Hour})
			q := set.AddPermanent(exposition.Key, expo)
			defer set.Close(context.Background())
			cache := handler.NewCache(handler.Deps{Sinks: set, Factories: []sinks.Factory{exposition.NewFactory(expo)}, Dedup: dedup.New(dedup.Options{Window: time.Minute})},
				handler.CacheOptions{Size: 4, IdleTimeout: time.Hour})

			dims := []string{"dim0", "dim1", "dim2", "dim3", "dim4", "dim5"}
			p := &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "loadtest.instance.istio-system",
				Kind: config.Params_MetricInfo_COUNTER, Name: "load_requests", LabelNames: dims}},
				Limits: &config.Limits{MaxSeriesPerMetric: 200000}} // 100k series, under one metric
			pb, err := p.Marshal()
			require.NoError(b, err)
			cfg := &types.Any{TypeUrl: config.TypeURL, Value: pb}

			// A ring of requests that together cover every series.
			var ring [][]byte
			for start := 0; start < series || len(ring) == 0; start += 100 {
				req := &metricpb.HandleMetricRequest{AdapterConfig: cfg}
				for i := start; i < start+100; i++ {
					d := map[string]*policypb.Value{}
					for j, name := range dims {
						d[name] = &policypb.Value{Value: &policypb.Value_StringValue{StringValue: fmt.Sprintf("value-%d-%d", j, (i%series)>>(2*j))}}
					}
					req.Instances = append(req.Instances, &metricpb.InstanceMsg{Name: "loadtest.instance.istio-system",
						Value: &policypb.Value{Value: &policypb.Value_Int64Value{Int64Value: 1}}, Dimensions: d})
				}
				raw, err := req.Marshal()
				require.NoError(b, err)
				ring = append(ring, raw)
			}
			var r handlemetric.Request
			run := func(raw []byte) {
				if err := r.Parse(raw); err != nil {
					b.Fatal(err)
				}
				h, err := cache.Get(r.AdapterConfig)
				if err != nil {
					b.Fatal(err)
				}
				o := h.Handle(&r, time.Now())
				h.Done()
				if o.Accepted != 100 {
					b.Fatalf("accepted %d: %v", o.Accepted, o.Err())
				}
				if err := q.Flush(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			for _, raw := range ring { // create every series first: the steady state
				run(raw)
			}
			require.Equal(b, series, expo.Len())

			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				run(ring[i%len(ring)])
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			n := float64(b.N) * 100
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/instance")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/n, "allocs/instance")
		})
	}
}
