package handler_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/dedup"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/config"
)

// discard is a sink that consumes nothing, so that the benchmark measures
// the ingest path alone: decode, convert, fill batches, enqueue.
type discard struct{ *sinktest.Sink }

func (discard) Consume(*sinks.Batch) {}

type discardFactory struct{}

func (discardFactory) Configured(*config.Params) bool              { return true }
func (discardFactory) Normalize(*config.Params) config.FieldErrors { return nil }
func (discardFactory) Key(*config.Params) string                   { return "discard" }
func (discardFactory) Check(*config.Params, []*sinks.Metric) error { return nil }
func (discardFactory) New(*config.Params) (sinks.Sink, error) {
	return discard{sinktest.New("discard")}, nil
}

// BenchmarkHandle measures HandleMetric's work per instance for Mixer-shaped
// requests: 100 instances, 6 string dimensions, one COUNTER.
func BenchmarkHandle(b *testing.B) {
	for _, cardinality := range []int{1, 1000} {
		b.Run(fmt.Sprintf("series=%d", cardinality), func(b *testing.B) {
			set := sinks.NewSet(1<<30, time.Second)
			defer set.Close(context.Background())
			cache := handler.NewCache(handler.Deps{Sinks: set, Factories: []sinks.Factory{discardFactory{}}, Dedup: dedup.New(dedup.Options{Window: time.Minute})},
				handler.CacheOptions{Size: 4, IdleTimeout: time.Hour})
			labels := []string{"source", "destination", "path", "method", "code", "version"}
			p := &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "requestcount.instance.istio-system",
				Kind: config.Params_MetricInfo_COUNTER, LabelNames: labels}}}
			cfgAny := params(b, p)
			req := &metricpb.HandleMetricRequest{AdapterConfig: cfgAny}
			for i := 0; i < 100; i++ {
				dims := map[string]*policypb.Value{}
				for j, l := range labels {
					dims[l] = mt.Str(fmt.Sprintf("%s-%d", l, (i*7+j)%cardinality))
				}
				req.Instances = append(req.Instances, mt.Instance("requestcount.instance.istio-system", mt.Int(1)))
				req.Instances[i].Dimensions = dims
			}
			raw, err := req.Marshal()
			require.NoError(b, err)
			var r handlemetric.Request
			now := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := r.Parse(raw); err != nil {
					b.Fatal(err)
				}
				h, err := cache.Get(r.AdapterConfig)
				if err != nil {
					b.Fatal(err)
				}
				o := h.Handle(&r, now)
				h.Done()
				if o.Accepted != 100 {
					b.Fatalf("accepted %d", o.Accepted)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/instance")
		})
	}
}
