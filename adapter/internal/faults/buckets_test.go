package faults_test

import (
	"math"
	"net/http"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// TestBucketDefinitionsAreCheckedOnceComputed is the ninth finding,
// against the server: linear_buckets {width: 1e308, offset: 1e308} was
// accepted and exposed 11 le="+Inf" lines, and num_finite_buckets: 1000
// was refused although the docs give 1,000 as the limit. Bounds are now
// checked once computed: definitions whose bounds overflow or repeat are
// refused (InvalidArgument naming the field, counted), and one of 1,000
// finite buckets is exposed with 1,001 finite bounds and one +Inf.
func TestBucketDefinitionsAreCheckedOnceComputed(t *testing.T) {
	h := start(t, setup{kind: rwKind, tweak: func(o *adapter.Options) { o.Sinks = nil }})
	linear := func(n int32, width, offset float64) func(*config.Params) {
		return func(p *config.Params) {
			p.Prometheus = nil
			p.Metrics = []*config.Params_MetricInfo{{InstanceName: instanceName, Kind: config.Params_MetricInfo_DISTRIBUTION, Name: "latency",
				Buckets: &config.Params_MetricInfo_BucketsDefinition{Definition: &config.Params_MetricInfo_BucketsDefinition_LinearBuckets{
					LinearBuckets: &config.Params_MetricInfo_BucketsDefinition_Linear{NumFiniteBuckets: n, Width: width, Offset: offset}}}}}
		}
	}
	value := []*metricpb.InstanceMsg{{Name: instanceName, Value: mt.Double(3)}}
	for _, bad := range []struct {
		name string
		edit func(*config.Params)
		msg  string
	}{
		{"overflowing to +Inf", linear(10, 1e308, 1e308), "metrics[0].buckets: linear_buckets: bound 1 is +Inf"},
		{"a width below the offset's precision", linear(10, 1, 1e17), "metrics[0].buckets: linear_buckets: bound 1 (1e+17) is not above"},
		{"more than 1,000 finite buckets", linear(1001, 1, 0), "metrics[0].buckets: linear_buckets.num_finite_buckets must be between 1 and 1000"},
	} {
		err := h.call(h.params(bad.edit), value)
		require.Equal(t, codes.InvalidArgument, status.Code(err), bad.name)
		require.Contains(t, status.Convert(err).Message(), bad.msg, bad.name)
	}
	require.Equal(t, 3.0, h.counters("meshmetrics_instances_rejected_total", "reason")["bad_config"], "each refusal counted")

	require.NoError(t, h.call(h.params(linear(1000, 0.5, 0)), value), "1,000 finite buckets: the documented limit")
	require.NoError(t, h.flush(30*time.Second))
	resp, err := http.Get("http://" + h.a.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err, "the exposition parses")
	mf := mfs["istio_latency"]
	require.NotNil(t, mf)
	require.Len(t, mf.GetMetric(), 1)
	hist := mf.GetMetric()[0].GetHistogram()
	buckets := hist.GetBucket()
	infs := 0
	for _, b := range buckets {
		if math.IsInf(b.GetUpperBound(), 1) {
			infs++
		}
	}
	require.Equal(t, 1002, len(buckets), "1,001 finite bounds and +Inf")
	require.Equal(t, 1, infs, "one +Inf bucket")
	require.True(t, math.IsInf(buckets[len(buckets)-1].GetUpperBound(), 1), "the last")
	require.Equal(t, uint64(1), hist.GetSampleCount())
}
