package mixertest

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
)

func samples() []string {
	dir := filepath.Join(RepoRoot(), "deploy", "kubernetes", "samples")
	return append(MeshmetricsCRs(), filepath.Join(dir, "analyticcounter.yaml"), filepath.Join(dir, "analyticprom-prometheus.yaml"))
}

func sampleBags() string {
	return filepath.Join(RepoRoot(), "testdata", "attributes", "analytic.yaml")
}

// TestSamplesEndToEnd sends the sample bags, one Report each as a proxy without batching
// would, through the sample config into an in-process adapter, and checks the recording
// sink: one series per distinct label set, counting exactly the matching requests.
func TestSamplesEndToEnd(t *testing.T) {
	a := StartAdapter(t, AdapterOptions{})
	m := NewMixer(t, MixerOptions{Config: samples(), Address: a.GRPCAddr()})
	matched := 0
	for _, r := range m.ReportEach(m.BagsFromFile(t, sampleBags())...) {
		r.RequireOK(t)
		matched += r.Matched()
	}
	require.Equal(t, 6, matched)

	sink := a.Recorded(t)
	require.NoError(t, sink.WaitSamples(t.Context(), 6))
	metric := "istio_analytic_requests"
	require.Equal(t, map[string]sinktest.Aggregate{
		sinktest.Key(metric, "/v1/damage?analytic=1", "GET", "200", "damage", "frontend"):    {Count: 2, Sum: 2, Min: 1, Max: 1, Last: 1},
		sinktest.Key(metric, "/v1/damage?analytic=2", "POST", "201", "damage", "batch"):      {Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1},
		sinktest.Key(metric, "/v1/damage?analytic=1", "GET", "500", "damage", "frontend"):    {Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1},
		sinktest.Key(metric, "/v1/damage?analytic=", "GET", "200", "damage", "frontend"):     {Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1},
		sinktest.Key(metric, "/v1/damage?analytic=3", "unknown", "200", "damage", "unknown"): {Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1},
	}, sink.Series())
}

// TestOneBatchedReportMakesOneCall sends all bags in one Report: one HandleMetric call
// carries every matching instance.
func TestOneBatchedReportMakesOneCall(t *testing.T) {
	a := StartAdapter(t, AdapterOptions{})
	m := NewMixer(t, MixerOptions{Config: samples(), Address: a.GRPCAddr()})
	r := m.Report(m.BagsFromFile(t, sampleBags())...).RequireOK(t)
	require.Len(t, r.Results, 1)
	var req metricpb.HandleMetricRequest
	require.NoError(t, req.Unmarshal(r.Results[0].Request))
	require.Len(t, req.Instances, 6)
	require.NoError(t, a.Recorded(t).WaitSamples(t.Context(), 6))
}

// TestBuiltinPrometheusSink reads the counters back from /metrics.
func TestBuiltinPrometheusSink(t *testing.T) {
	a := StartAdapter(t, AdapterOptions{BuiltinSinks: true})
	m := NewMixer(t, MixerOptions{Config: samples(), Address: a.GRPCAddr()})
	for _, b := range m.BagsFromFile(t, sampleBags()) {
		m.Report(b).RequireOK(t)
	}
	series := a.Series(t, "istio_analytic_requests")
	total := 0.0
	for _, v := range series {
		total += v
	}
	require.Equal(t, 6.0, total)
	require.Equal(t, 2.0, series[`{destination_service="damage",request_method="GET",request_path="/v1/damage?analytic=1",response_code="200",source_workload="frontend"}`])
}

func TestReportErrors(t *testing.T) {
	// No adapter listens here: the call fails, and Err says which handler and where.
	m := NewMixer(t, MixerOptions{Config: samples(), Address: "127.0.0.1:1"})
	r := m.Report(m.Bag(t, map[string]any{"request.path": "/v1/damage?analytic=1"}))
	require.ErrorContains(t, r.Err(), "handler analyticprom-prometheus.handler.istio-system at 127.0.0.1:1")

	// A bag that matches nothing makes no call and no error.
	r = m.Report(m.Bag(t, map[string]any{"request.path": "/other", "response.code": 200}))
	require.NoError(t, r.Err())
	require.Empty(t, r.Calls)
	require.Equal(t, 0, r.Matched())

	_, err := m.bag(map[string]any{"request.pathh": "/"})
	require.ErrorContains(t, err, `unknown attribute "request.pathh"`)
	_, err = m.bag(map[string]any{"response.code": "200"})
	require.ErrorContains(t, err, "attribute response.code is INT64 in the attribute manifest")

	_, err = newMixer(MixerOptions{Config: []string{filepath.Join(t.TempDir(), "missing.yaml")}})
	require.ErrorContains(t, err, "missing.yaml")
}
