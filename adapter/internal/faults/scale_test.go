package faults_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/config"
)

// TestHugeLabelValuesAreCut: a label value of a megabyte is accepted and
// cut to limits.max_label_value_length, at a UTF-8 boundary, before it
// reaches a series.
func TestHugeLabelValuesAreCut(t *testing.T) {
	tests := []struct {
		name  string
		kind  kind
		limit int32
		value string
		want  string
	}{
		{"remote write, default limit", rwKind, 0, strings.Repeat("a", 1<<20), strings.Repeat("a", config.DefaultMaxLabelValueLength)},
		{"remote write, cut inside a rune", rwKind, 101, strings.Repeat("é", 1<<19), strings.Repeat("é", 50)},
		{"librato, default limit", libratoKind, 0, strings.Repeat("a", 1<<20), strings.Repeat("a", 255)}, // then Librato's 255
		{"librato, own limit", libratoKind, 64, strings.Repeat("b", 1<<20), strings.Repeat("b", 64)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, setup{kind: tc.kind})
			cfg := h.params(func(p *config.Params) { p.Limits = &config.Limits{MaxLabelValueLength: tc.limit} })
			require.NoError(t, h.call(cfg, []*metricpb.InstanceMsg{{Name: instanceName, Value: mt.Int(1),
				Dimensions: map[string]*policypb.Value{"path": mt.Str(tc.value)}}}))
			require.NoError(t, h.flush(30*time.Second))
			var got []string
			if h.lib != nil {
				for _, p := range h.lib.Measurements() {
					got = append(got, p.Tags["path"])
				}
			} else {
				for key := range h.rw.Last(rwName) {
					got = append(got, key)
				}
			}
			require.Len(t, got, 1)
			if h.lib != nil {
				require.Equal(t, tc.want, got[0])
			} else {
				require.Equal(t, rwName+`{path="`+tc.want+`"}`, got[0])
			}
			require.True(t, utf8.ValidString(got[0]))
			require.Equal(t, 1.0, h.received())
		})
	}
}

// TestAMillionDistinctLabelSetsHitTheCaps sends 10^6 instances, each with a
// label set of its own, to two metrics: the per-metric cap
// (limits.max_series_per_metric) stops the first, the sink's cap
// (--max-series) the second. Every instance beyond is counted, the sink
// holds exactly the capped series, and the heap stays small.
func TestAMillionDistinctLabelSetsHitTheCaps(t *testing.T) {
	const (
		total      = 1_000_000
		perCall    = 10_000
		perMetric  = 1000
		sinkSeries = 1500
	)
	h := start(t, setup{kind: rwKind, tweak: func(o *adapter.Options) { o.MaxSeries = sinkSeries }})
	other := &config.Params_MetricInfo{InstanceName: "other.instance.istio-system", Kind: config.Params_MetricInfo_COUNTER,
		Name: "other", LabelNames: []string{"path"}}
	cfg := h.params(func(p *config.Params) {
		p.Metrics = append(p.Metrics, other)
		p.Limits = &config.Limits{MaxSeriesPerMetric: perMetric}
	})
	heapBefore := liveHeap()
	ins := make([]*metricpb.InstanceMsg, perCall)
	for i := range ins {
		ins[i] = &metricpb.InstanceMsg{Value: mt.Int(1), Dimensions: map[string]*policypb.Value{"path": mt.Str("")}}
	}
	for c := 0; c < total/perCall; c++ {
		name := instanceName // the first half to the first metric
		if c >= total/perCall/2 {
			name = other.InstanceName
		}
		for i := range ins {
			ins[i].Name = name
			ins[i].Dimensions["path"].Value.(*policypb.Value_StringValue).StringValue = fmt.Sprintf("/u/%d", c*perCall+i)
		}
		require.NoError(t, h.call(cfg, ins))
	}
	require.NoError(t, h.flush(time.Minute))
	heapAfter := liveHeap()

	require.Equal(t, float64(total), h.counters("meshmetrics_instances_accepted_total", "")[""])
	drops := h.drops()
	require.Equal(t, map[string]float64{
		telemetry.DropSeriesLimit:     total/2 - perMetric,
		telemetry.DropSinkSeriesLimit: total/2 - (sinkSeries - perMetric),
	}, drops)
	require.Equal(t, map[string]float64{h.sinkNames()[0]: sinkSeries}, h.counters("meshmetrics_sink_series", "sink"))
	require.Equal(t, float64(perMetric), h.rw.Total(rwName))
	require.Equal(t, float64(sinkSeries-perMetric), h.rw.Total("istio_other"))
	require.Equal(t, float64(total), h.rw.Total(rwName)+h.rw.Total("istio_other")+drops[telemetry.DropSeriesLimit]+drops[telemetry.DropSinkSeriesLimit],
		"instances: sent == in the backend + dropped")
	growth := int64(heapAfter) - int64(heapBefore)
	t.Logf("figures %s: %d instances, %d series kept, live heap %d MiB before, %d MiB after (growth %d KiB)",
		t.Name(), total, sinkSeries, heapBefore>>20, heapAfter>>20, growth>>10)
	// A million series would take hundreds of MiB; the capped ones take
	// well under a MiB. The bound is coarse: pools and buffers come and go.
	require.Less(t, growth, int64(64<<20), "memory is bounded by the caps, not by the label sets sent")
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestAConfigWithAThousandMetricsWorks: a handler config of a thousand
// metrics is built, and an instance of each reaches the backend.
func TestAConfigWithAThousandMetricsWorks(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			h := start(t, setup{kind: k})
			var metrics []*config.Params_MetricInfo
			var ins []*metricpb.InstanceMsg
			for i := 0; i < 1000; i++ {
				metrics = append(metrics, &config.Params_MetricInfo{InstanceName: fmt.Sprintf("m%d.instance.istio-system", i),
					Kind: config.Params_MetricInfo_COUNTER, Name: fmt.Sprintf("m%d", i), LabelNames: []string{"path"}})
				ins = append(ins, &metricpb.InstanceMsg{Name: fmt.Sprintf("m%d.instance.istio-system", i), Value: mt.Int(int64(i)),
					Dimensions: map[string]*policypb.Value{"path": mt.Str("/x")}})
			}
			cfg := h.params(func(p *config.Params) { p.Metrics = metrics })
			require.NoError(t, h.call(cfg, ins))
			require.NoError(t, h.flush(30*time.Second))
			require.Empty(t, h.drops())
			var sum float64
			names := map[string]bool{}
			switch {
			case h.lib != nil:
				for _, p := range h.lib.Measurements() {
					names[p.Name] = true
					if p.Sum != nil {
						sum += *p.Sum
					} else {
						sum += *p.Value
					}
				}
			case h.otlp != nil:
				for i := 0; i < 1000; i++ {
					name := fmt.Sprintf("istio.m%d", i)
					if len(h.otlp.Series(name)) > 0 {
						names[name] = true
					}
					sum += h.otlp.Total(name)
				}
				require.Empty(t, h.otlp.Violations())
			default:
				for key, s := range h.rw.Samples() {
					names[key] = true
					sum += s[len(s)-1].Value
				}
				require.Empty(t, h.rw.Violations())
			}
			require.Len(t, names, 1000, "a series per metric")
			require.Equal(t, float64(999*1000/2), sum, "every value")
		})
	}
}
