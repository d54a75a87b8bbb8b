package librato_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// istioLabels are the dimensions of Istio's standard requestcount instance,
// with typical values, as name/value pairs: what a measurement's tags look
// like in practice.
func istioLabels(i int) []string {
	return []string{
		"reporter", "destination",
		"source_workload", fmt.Sprintf("productpage-v%d", i%3+1),
		"source_workload_namespace", "default",
		"destination_workload", fmt.Sprintf("reviews-v%d", i%7+1),
		"destination_workload_namespace", "default",
		"destination_service", fmt.Sprintf("svc-%d.default.svc.cluster.local", i),
		"request_protocol", "http",
		"response_code", fmt.Sprint([]int{200, 200, 200, 404, 503}[i%5]),
		"connection_security_policy", "mutual_tls",
	}
}

// istioDims are istioLabels as Mixer dimensions.
func istioDims(i int) []any {
	var dims []any
	labels := istioLabels(i)
	for j := 0; j < len(labels); j += 2 {
		dims = append(dims, labels[j], mt.Str(labels[j+1]))
	}
	return dims
}

// istioKey is istioLabels' values, as a sinks.Batch takes them.
func istioKey(i int) [][]byte {
	var values [][]byte
	labels := istioLabels(i)
	for j := 1; j < len(labels); j += 2 {
		values = append(values, []byte(labels[j]))
	}
	return values
}

var istioMetric = &config.Params_MetricInfo{InstanceName: "requestcount.instance.istio-system",
	Kind: config.Params_MetricInfo_DISTRIBUTION, Name: "request_duration",
	LabelNames: []string{"reporter", "source_workload", "source_workload_namespace", "destination_workload",
		"destination_workload_namespace", "destination_service", "request_protocol", "response_code", "connection_security_policy"}}

// BenchmarkConsume is the sink's aggregation: samples per second folded
// into per-series period state (1000-sample batches over 1000 series).
func BenchmarkConsume(b *testing.B) {
	h := newHarness(b, harnessConfig{})
	p, err := config.Normalize(&config.Params{Librato: h.librato(func(l *config.LibratoParams) { l.Period = time.Hour }),
		Metrics: []*config.Params_MetricInfo{istioMetric}})
	require.NoError(b, err)
	require.Empty(b, h.factory.Normalize(p))
	s, err := h.factory.New(p)
	require.NoError(b, err)
	b.Cleanup(func() { _ = s.Close(context.Background()) })
	binding, err := s.Bind(&sinks.Metric{Namespace: "istio", Name: "request_duration", Kind: sinks.Distribution,
		LabelNames: istioMetric.LabelNames})
	require.NoError(b, err)

	const series = 1000
	batch := &sinks.Batch{Time: h.clock.Now()}
	for i := 0; i < series; i++ {
		batch.Add(binding, float64(i%250), istioKey(i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s.Consume(batch)
	}
	b.ReportMetric(float64(b.N*series)/b.Elapsed().Seconds(), "instances/s")
}

// BenchmarkHandleToSink is the whole ingest path of a Mixer request: parse,
// handler lookup, conversion, sink queue and aggregation (1000 instances
// per request over 1000 series).
func BenchmarkHandleToSink(b *testing.B) {
	h := newHarness(b, harnessConfig{})
	anyCfg := h.params(h.librato(func(l *config.LibratoParams) { l.Period = time.Hour }), istioMetric)
	var ins []*metricpb.InstanceMsg
	for i := 0; i < 1000; i++ {
		ins = append(ins, mt.Instance("requestcount.instance.istio-system", mt.Duration(time.Duration(i)*time.Millisecond), istioDims(i)...))
	}
	raw, err := (&metricpb.HandleMetricRequest{Instances: ins, AdapterConfig: anyCfg}).Marshal()
	require.NoError(b, err)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		var req handlemetric.Request
		if err := req.Parse(raw); err != nil {
			b.Fatal(err)
		}
		hd, err := h.cache.Get(req.AdapterConfig)
		if err != nil {
			b.Fatal(err)
		}
		o := hd.Handle(&req, h.clock.Now())
		hd.Done()
		if o.Err() != nil {
			b.Fatal(o.Err())
		}
		if n++; n%100 == 0 {
			h.waitConsumed() // keep the sink queue from overflowing
		}
	}
	h.waitConsumed()
	b.ReportMetric(float64(b.N*len(ins))/b.Elapsed().Seconds(), "instances/s")
}

// BenchmarkWire measures what one period of 1000 series costs on the wire:
// bytes per measurement (as sent, and gzipped) and requests per million
// instances, for a given instance rate and a 60 s period, through the real
// sink and a fake Librato. Run it with -benchtime=1x: each iteration sends
// one million instances.
func BenchmarkWire(b *testing.B) {
	for _, tc := range []struct {
		rate int // instances per second
		gzip bool
	}{{1000, false}, {10000, false}, {100000, false}, {10000, true}} {
		b.Run(fmt.Sprintf("rate=%d/gzip=%v", tc.rate, tc.gzip), func(b *testing.B) {
			for b.Loop() {
				requests, bytesPerMeasurement := wireCost(b, tc.rate, tc.gzip)
				b.ReportMetric(requests, "requests/1M-instances")
				b.ReportMetric(bytesPerMeasurement, "B/measurement")
			}
		})
	}
}

// wireCost feeds one million instances over 1000 series into a sink at rate
// instances per (fake) second, with a 60 s period, and counts what reached
// the fake service.
func wireCost(b *testing.B, rate int, gzip bool) (requests, bytesPerMeasurement float64) {
	const total, series, perBatch = 1_000_000, 1000, 1000
	h := newHarness(b, harnessConfig{options: librato.Options{Gzip: gzip}})
	p, err := config.Normalize(&config.Params{Librato: h.librato(func(l *config.LibratoParams) {
		l.Period = time.Minute
		l.ReplicaTag = "replica"
	}), Metrics: []*config.Params_MetricInfo{istioMetric}})
	require.NoError(b, err)
	require.Empty(b, h.factory.Normalize(p))
	s, err := h.factory.New(p)
	require.NoError(b, err)
	binding, err := s.Bind(&sinks.Metric{Namespace: "istio", Name: "request_duration", Kind: sinks.Distribution,
		LabelNames: istioMetric.LabelNames})
	require.NoError(b, err)
	keys := make([][][]byte, series)
	for i := range keys {
		keys[i] = istioKey(i)
	}
	step := time.Duration(float64(time.Second) * perBatch / float64(rate))
	batch := &sinks.Batch{}
	for sent := 0; sent < total; sent += perBatch {
		batch.Reset()
		batch.Time = h.clock.Now()
		for i := 0; i < perBatch; i++ {
			batch.Add(binding, float64(i%250), keys[(sent+i)%series])
		}
		s.Consume(batch) // closes a period when the batch's time is past it
		h.clock.Advance(step)
	}
	require.NoError(b, s.Close(context.Background()))
	st := h.srv.Stats()
	require.Equal(b, int64(total), h.srv.Count("istio.request_duration"), "every instance arrived")
	var body int
	for _, r := range h.srv.Requests() {
		body += len(r.RawBody)
	}
	return float64(st.Requests) * 1e6 / total, float64(body) / float64(st.Accepted)
}
