package series_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/series"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/params"
	"github.com/meshmetrics/meshmetrics/config"
)

// istioMetrics are the metrics of Istio's own Prometheus handler config,
// copied unchanged, as the adapter resolves them: encoded against the
// meshmetrics adapter CR as Mixer encodes them, decoded and normalized.
func istioMetrics(t *testing.T) []*sinks.Metric {
	t.Helper()
	store, err := crd.Load("../../../deploy/kubernetes/adapter.yaml", "../../../deploy/kubernetes/template-metric.yaml",
		"../../../testdata/prometheus/istio-handler.yaml")
	require.NoError(t, err)
	hs := store.Handlers()
	require.Len(t, hs, 1)
	a, err := store.AdapterOf(hs[0])
	require.NoError(t, err)
	schema, err := params.ParseSchema(a.Config)
	require.NoError(t, err)
	cfg, err := schema.AdapterConfig(hs[0].Params)
	require.NoError(t, err)
	p, err := config.Decode(true, []byte(cfg.TypeUrl), cfg.Value)
	require.NoError(t, err)
	require.Nil(t, p.Limits, "Istio's config sets no limits")
	p, err = adapter.NormalizeParams(p)
	require.NoError(t, err)
	return handler.MetricsOf(p)
}

// TestIstioConfigKeepsAMidSizeMeshAtTheDefaults: a config copied from
// Istio's Prometheus adapter keeps every series of a 100k-series metric at
// the defaults (the old per-metric default, 50,000, dropped half of them).
func TestIstioConfigKeepsAMidSizeMeshAtTheDefaults(t *testing.T) {
	const perMetric = 100000
	metrics := istioMetrics(t)
	require.Len(t, metrics, 8)
	require.Equal(t, "requests_total", metrics[0].Name)
	require.Zero(t, metrics[0].MaxSeries, "no per-metric cap of its own")

	r := newRegistry(config.DefaultMaxSeries, nil)
	requests := r.Bind("istio_requests_total", metrics[0], 1)
	key := make([][]byte, len(metrics[0].LabelNames))
	for j := range key {
		key[j] = []byte("x")
	}
	var d series.Drops
	for start := 0; start < perMetric; start += 1000 {
		b := &sinks.Batch{Time: time.Unix(1, 0)}
		for i := start; i < start+1000; i++ {
			key[3] = fmt.Appendf(key[3][:0], "workload-%d", i) // source_workload
			b.Add(requests, 1, key)
		}
		got := r.Apply(b, add)
		d.FamilyLimit += got.FamilyLimit
		d.SinkLimit += got.SinkLimit
	}
	require.Zero(t, d.Total(), "a 100k-series metric loses nothing")
	require.Equal(t, perMetric, r.Len())

	// The sink's cap is the bound: once the registry holds --max-series,
	// the next new series of any metric is dropped (exposition's
	// TestIstioConfigIsBoundedByTheSinkCap shows it at a small cap).
	require.Greater(t, config.DefaultMaxSeries, perMetric)
}
