package handler_test

import (
	"math"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/dedup"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/config"
)

// record sends instances through Resolve and a Recording, as the Mixer-less
// runtime does: each instance's dimensions are read from a HandleMetric
// request holding them (so that both paths get the same values), resolved
// by their keys, and recorded by position.
func (f *fixture) record(t *testing.T, cfg *types.Any, instances ...*metricpb.InstanceMsg) (handler.Outcome, error) {
	raw, err := (&metricpb.HandleMetricRequest{Instances: instances, AdapterConfig: cfg}).Marshal()
	require.NoError(t, err)
	var req handlemetric.Request
	require.NoError(t, req.Parse(raw))
	h, err := f.cache.Get(req.AdapterConfig)
	if err != nil {
		return handler.Outcome{}, err
	}
	defer h.Done()
	var rec handler.Recording
	h.Begin(&rec, f.now)
	for i := 0; i < req.NumInstances(); i++ {
		var in handlemetric.Instance
		require.NoError(t, req.Instance(i, &in))
		var keys [][]byte
		var dims []handlemetric.Value
		// In reverse: the request's order (sorted by key) must not matter.
		for j := len(in.Dimensions) - 1; j >= 0; j-- {
			keys = append(keys, in.Dimensions[j].Key)
			dims = append(dims, in.Dimensions[j].Value)
		}
		target := h.Resolve(in.Name, keys)
		rec.Record(&target, in.Value, dims)
	}
	o := rec.End()
	return o, o.Err()
}

// TestRecordingMatchesHandle: the Mixer-less mode's direct recording records,
// refuses, cuts and drops exactly what HandleMetric does with the same
// instances.
func TestRecordingMatchesHandle(t *testing.T) {
	const rc = "requestcount.instance.istio-system"
	twoMetrics := &config.Params{Metrics: []*config.Params_MetricInfo{
		{InstanceName: rc, Kind: config.Params_MetricInfo_COUNTER, Name: "requests_total", LabelNames: []string{"path", "code"}},
		{InstanceName: "requestcount", Kind: config.Params_MetricInfo_GAUGE, Name: "last", LabelNames: []string{"code", "flag", "path"}},
		{InstanceName: "latency", Kind: config.Params_MetricInfo_DISTRIBUTION, Name: "latency", LabelNames: []string{"path"},
			DurationUnit: config.DurationUnit_MILLISECONDS},
	}}
	cut := &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "a", Kind: config.Params_MetricInfo_GAUGE,
		LabelNames: []string{"l", "m"}}}, Limits: &config.Limits{MaxLabelValueLength: 5}}
	kinds := &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "k", Kind: config.Params_MetricInfo_GAUGE,
		LabelNames: []string{"s", "i", "d", "b", "ip", "ip6", "ts", "dur", "email", "dns", "uri"}}}}
	//nolint:staticcheck // the seed adapter's params, unchanged.
	implicit := &config.Params{LibratoEmail: "ops@example.com", LibratoToken: "tok-123456"}
	ts := &policypb.Value{Value: &policypb.Value_TimestampValue{TimestampValue: &policypb.TimeStamp{Value: &types.Timestamp{Seconds: 1600000000, Nanos: 5}}}}
	tests := []struct {
		name      string
		params    *config.Params
		capacity  int
		instances []*metricpb.InstanceMsg
	}{
		{"labels by name, missing empty, extra ignored, durations scaled", requestCount, 1000, []*metricpb.InstanceMsg{
			mt.Instance(rc, mt.Int(1), "code", mt.Int(200), "extra", mt.Str("x"), "path", mt.Str("/v1/damage")),
			mt.Instance(rc, mt.Double(2.5), "path", mt.Str("/v1/damage")),
			mt.Instance(rc, mt.Str("12"), "code", mt.Int(500)),
			mt.Instance("latency.instance.default", mt.Duration(1500*time.Millisecond), "path", mt.Str("/a")),
		}},
		{"refusals", requestCount, 1000, []*metricpb.InstanceMsg{
			mt.Instance("nosuch.instance.istio-system", mt.Int(1)),
			mt.Instance(rc, mt.Str("abc"), "path", mt.Str("/x")),
			mt.Instance(rc, mt.Double(math.NaN()), "path", mt.Str("/x")),
			mt.Instance(rc, mt.Int(-1), "path", mt.Str("/x")),
			mt.Instance(rc, nil, "path", mt.Str("/x")),
			mt.Instance(rc, mt.Int(3), "path", mt.Str("/kept")),
		}},
		{"one instance, several metrics, other label orders", twoMetrics, 1000, []*metricpb.InstanceMsg{
			mt.Instance(rc, mt.Int(-2), "path", mt.Str("/a"), "flag", &policypb.Value{Value: &policypb.Value_BoolValue{BoolValue: true}}, "code", mt.Int(404)),
			mt.Instance(rc, mt.Int(4), "flag", &policypb.Value{Value: &policypb.Value_BoolValue{}}),
			mt.Instance("latency", mt.Duration(time.Second)),
		}},
		{"values cut at the limit, text and converted", cut, 1000, []*metricpb.InstanceMsg{
			mt.Instance("a", mt.Int(1), "l", mt.Str("héllo world"), "m", mt.Str("short")),
			mt.Instance("a", mt.Int(2), "l", mt.Int(1234567), "m", mt.Str("")),
		}},
		{"every kind of value as a label", kinds, 1000, []*metricpb.InstanceMsg{
			mt.Instance("k", mt.Int(1), "s", mt.Str("text"), "i", mt.Int(-7), "d", mt.Double(0.25),
				"b", &policypb.Value{Value: &policypb.Value_BoolValue{BoolValue: true}},
				"ip", &policypb.Value{Value: &policypb.Value_IpAddressValue{IpAddressValue: &policypb.IPAddress{Value: []byte{10, 0, 0, 1}}}},
				"ip6", &policypb.Value{Value: &policypb.Value_IpAddressValue{IpAddressValue: &policypb.IPAddress{Value: make([]byte, 16)}}},
				"ts", ts, "dur", mt.Duration(1500*time.Millisecond),
				"email", &policypb.Value{Value: &policypb.Value_EmailAddressValue{EmailAddressValue: &policypb.EmailAddress{Value: "a@b.c"}}},
				"dns", &policypb.Value{Value: &policypb.Value_DnsNameValue{DnsNameValue: &policypb.DNSName{Value: "a.b"}}},
				"uri", &policypb.Value{Value: &policypb.Value_UriValue{UriValue: &policypb.Uri{Value: "http://a/b"}}}),
		}},
		{"implicit metrics: every dimension, by name", implicit, 1000, []*metricpb.InstanceMsg{
			mt.Instance("requestsize.instance.istio-system", mt.Int(1235), "destination", mt.Str("svc"), "code", mt.Int(200), "b", mt.Str("")),
			mt.Instance("other", mt.Double(1)),
		}},
		{"a full queue drops and says so", requestCount, 2, []*metricpb.InstanceMsg{
			mt.Instance(rc, mt.Int(1), "path", mt.Str("/a")),
			mt.Instance(rc, mt.Int(1), "path", mt.Str("/b")),
			mt.Instance(rc, mt.Int(1), "path", mt.Str("/c")),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			viaMixer, direct := newFixture(t, tc.capacity), newFixture(t, tc.capacity)
			cfg := params(t, tc.params)
			want, wantErr := viaMixer.handle(t, cfg, "", tc.instances...)
			got, gotErr := direct.record(t, cfg, tc.instances...)
			require.Equal(t, want.Received, got.Received)
			require.Equal(t, want.Accepted, got.Accepted)
			require.Equal(t, want.Rejected, got.Rejected)
			require.Equal(t, want.Truncated, got.Truncated)
			require.Equal(t, want.Dropped, got.Dropped)
			if wantErr == nil {
				require.NoError(t, gotErr)
			} else {
				require.EqualError(t, gotErr, wantErr.Error())
			}
			wantSink, gotSink := viaMixer.flush(t), direct.flush(t)
			require.Equal(t, wantSink.Samples(), gotSink.Samples())
			require.Equal(t, wantSink.Series(), gotSink.Series())
			if tc.capacity > 2 {
				require.NotEmpty(t, gotSink.Samples(), "the case records something")
			}
		})
	}
}

// TestRecordingAllocatesNothing: once resolved, recording an instance costs
// no allocation, converted labels included (the batch's growth, amortised,
// aside).
func TestRecordingAllocatesNothing(t *testing.T) {
	f := newFixture(t, 1<<20)
	raw, err := (&metricpb.HandleMetricRequest{AdapterConfig: params(t, requestCount)}).Marshal()
	require.NoError(t, err)
	var req handlemetric.Request
	require.NoError(t, req.Parse(raw))
	h, err := f.cache.Get(req.AdapterConfig)
	require.NoError(t, err)
	defer h.Done()
	target := h.Resolve([]byte("requestcount.instance.istio-system"), [][]byte{[]byte("path"), []byte("code")})
	dims := []handlemetric.Value{{Kind: handlemetric.KindString, Bytes: []byte("/v1/damage")}, {Kind: handlemetric.KindInt64, Int: 200}}
	var rec handler.Recording
	h.Begin(&rec, f.now)
	for i := 0; i < 100; i++ { // warm: batch and scratch capacity
		rec.Record(&target, handlemetric.Value{Kind: handlemetric.KindInt64, Int: 1}, dims)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		rec.Record(&target, handlemetric.Value{Kind: handlemetric.KindInt64, Int: 1}, dims)
	})
	require.Zero(t, allocs)
	o := rec.End()
	require.Equal(t, 1101, o.Accepted)
	require.Len(t, f.flush(t).Samples(), 1101)
}

// TestRecordingMatchesHandleAcrossSinks: a handler feeding two sinks (each
// metric has two bindings, with different default duration units) records
// the same samples in each as Handle, with the labels encoded once and
// their key copied to the second batch.
func TestRecordingMatchesHandleAcrossSinks(t *testing.T) {
	twoSinks := func() (*fixture, *sinktest.Factory) {
		f := newFixture(t, 1000)
		f.factory.Setup = func(s *sinktest.Sink) { s.DefaultUnit = config.DurationUnit_MILLISECONDS }
		second := sinktest.NewFactory()
		second.Route = func(*config.Params) string { return "second" }
		second.Setup = func(s *sinktest.Sink) { s.DefaultUnit = config.DurationUnit_SECONDS }
		f.cache = handler.NewCache(handler.Deps{Sinks: f.sinks, Factories: []sinks.Factory{f.factory, second}, Dedup: dedup.New(dedup.Options{Window: time.Minute})},
			handler.CacheOptions{Size: 4, IdleTimeout: time.Minute, Now: func() time.Time { return f.now }})
		return f, second
	}
	const rc = "requestcount.instance.istio-system"
	p := &config.Params{Metrics: []*config.Params_MetricInfo{
		{InstanceName: rc, Kind: config.Params_MetricInfo_COUNTER, Name: "requests_total", LabelNames: []string{"path", "code", "absent"}},
		{InstanceName: "latency", Kind: config.Params_MetricInfo_DISTRIBUTION, Name: "latency", LabelNames: []string{"code", "path"}},
	}, Limits: &config.Limits{MaxLabelValueLength: 8}}
	instances := []*metricpb.InstanceMsg{
		mt.Instance(rc, mt.Int(1), "code", mt.Int(200), "path", mt.Str("/v1/damage")),
		mt.Instance(rc, mt.Int(2), "code", mt.Int(123456789), "path", mt.Str("/a")),
		mt.Instance("latency", mt.Duration(1500*time.Millisecond), "path", mt.Str("/b"), "code", mt.Int(503)),
	}
	viaMixer, viaMixerSecond := twoSinks()
	direct, directSecond := twoSinks()
	cfg := params(t, p)
	want, err := viaMixer.handle(t, cfg, "", instances...)
	require.NoError(t, err)
	got, err := direct.record(t, cfg, instances...)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Equal(t, 2, got.Truncated, "a cut path and a cut code, once per metric")
	for _, k := range []struct{ want, got *sinktest.Factory }{{viaMixer.factory, direct.factory}, {viaMixerSecond, directSecond}} {
		viaMixer.flush(t)
		direct.flush(t)
		w, g := k.want.Sink(k.want.Keys()[0]), k.got.Sink(k.got.Keys()[0])
		require.Equal(t, w.Samples(), g.Samples())
		require.Equal(t, w.Series(), g.Series())
		require.Len(t, g.Series(), 3)
	}
	require.Equal(t, 1500.0, direct.factory.Sink("test").Series()["istio_latency{503,/b}"].Sum, "milliseconds in the first sink")
	require.Equal(t, 1.5, directSecond.Sink("second").Series()["istio_latency{503,/b}"].Sum, "seconds in the second")
}
