package faults_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/gogo/protobuf/types"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// TestHandlerCacheEvictionLosesNothing is the fourth attack: 65
// distinct handler configs called round robin, 10 times each, with a
// handler cache of 64, so that every call evicts the config called next.
// Each call was answered OK, yet /metrics held 64 series of value 1: every
// eviction took its metric's series with it, uncounted. Series now belong
// to the sink: each of the 65 series counts 10, in the exposition and in
// the push sinks, whether the configs share a destination (the series
// outlive their config) or each has its own (its sink flushes as it closes,
// and the next sink of the destination continues after it).
func TestHandlerCacheEvictionLosesNothing(t *testing.T) {
	const (
		configs = 65
		rounds  = 10
	)
	metricOf := func(i int) *config.Params_MetricInfo {
		return &config.Params_MetricInfo{InstanceName: fmt.Sprintf("m%d.instance.istio-system", i), Kind: config.Params_MetricInfo_COUNTER,
			Name: fmt.Sprintf("m%d", i)}
	}
	tests := []struct {
		name string
		kind kind
		// exposition: the default sink, read on /metrics.
		exposition bool
		// own: a destination per config (one metric each, told apart by a
		// tag), else one destination and a metric per config.
		own bool
	}{
		{"exposition, the issue's case", rwKind, true, false},
		{"remote write, one destination", rwKind, false, false},
		{"librato, one destination", libratoKind, false, false},
		{"librato, a destination per config", libratoKind, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, setup{kind: tc.kind, tweak: func(o *adapter.Options) {
				o.HandlerCacheSize = configs - 1
				if tc.exposition {
					o.Sinks = nil // the default sinks: the exposition on /metrics
				}
			}})
			cfgs := make([]*types.Any, configs)
			for i := range cfgs {
				cfgs[i] = h.params(func(p *config.Params) {
					p.Metrics = []*config.Params_MetricInfo{metricOf(i)}
					switch {
					case tc.exposition:
						p.Prometheus = nil
					case tc.own:
						p.Metrics = []*config.Params_MetricInfo{requestsMetric}
						p.Librato.Tags = map[string]string{"config": fmt.Sprint(i)}
					}
				})
			}
			for r := range rounds {
				for i, c := range cfgs {
					name := metricOf(i).InstanceName
					if tc.own {
						name = instanceName
					}
					require.NoError(t, h.call(c, []*metricpb.InstanceMsg{{Name: name, Value: mt.Int(1)}}), "round %d, config %d", r, i)
				}
			}
			require.NoError(t, h.flush(30*time.Second))
			built := h.counters("meshmetrics_handlers_built_total", "")[""]
			require.Equal(t, float64(configs*rounds), built, "every call evicted the config called next")
			require.Equal(t, float64(configs*rounds), h.counters("meshmetrics_instances_accepted_total", "")[""])
			require.Empty(t, h.drops(), "nothing dropped")

			perSeries := map[string]float64{}
			switch {
			case tc.exposition:
				resp, err := http.Get("http://" + h.a.HTTPAddr() + "/metrics")
				require.NoError(t, err)
				defer resp.Body.Close()
				parser := expfmt.NewTextParser(model.UTF8Validation)
				mfs, err := parser.TextToMetricFamilies(resp.Body)
				require.NoError(t, err)
				for name, mf := range mfs {
					if strings.HasPrefix(name, "istio_m") {
						for _, m := range mf.GetMetric() {
							perSeries[name] += m.GetCounter().GetValue()
						}
					}
				}
			case h.rw != nil:
				for i := range configs {
					for key, v := range h.rw.Last(fmt.Sprintf("istio_m%d", i)) {
						perSeries[key] += v
					}
				}
			default:
				require.NoError(t, h.shutdown(30*time.Second))
				require.Zero(t, h.lib.Stats().Conflicts, "no value replaced another")
				for _, p := range h.lib.Measurements() {
					perSeries[p.Name+"|"+p.Tags["config"]] += *p.Value
				}
			}
			require.Len(t, perSeries, configs)
			for key, v := range perSeries {
				require.Equal(t, float64(rounds), v, "series %s counts every call", key)
			}
			t.Logf("figures %s: %d configs round robin over a cache of %d, %d calls, %d handlers built; %d series of %d",
				t.Name(), configs, configs-1, configs*rounds, int(built), len(perSeries), rounds)
		})
	}
}
