package promnaming_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/promnaming"
)

func TestNames(t *testing.T) {
	tests := []struct {
		in, safe, metric, label string
	}{
		{"request_count", "request_count", "request_count", "request_count"},
		{"/request.count", "request_count", "request_count", "request_count"},
		{"source-app", "sourceapp", "sourceapp", "sourceapp"},
		{"a b/c.d", "a_b_c_d", "a_b_c_d", "a_b_c_d"},
		{"//x", "_x", "_x", "_x"},
		{"job:rate5m", "job:rate5m", "job:rate5m", "job_rate5m"},
		{"5xx", "5xx", "_5xx", "_5xx"},
		{"durée", "durée", "dur_e", "dur_e"},
		{"a@b#c", "a@b#c", "a_b_c", "a_b_c"},
		{"-", "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			require.Equal(t, tc.safe, promnaming.SafeName(tc.in), "Istio's safeName")
			require.Equal(t, tc.metric, promnaming.MetricName(tc.in))
			require.Equal(t, tc.label, promnaming.LabelName(tc.in))
		})
	}
}

func TestFullName(t *testing.T) {
	require.Equal(t, "istio_requests_total", promnaming.FullName("istio", "requests_total"))
	require.Equal(t, "my_app_requestcount", promnaming.FullName("my.app", "request-count"))
	require.Equal(t, "hits", promnaming.FullName("", "hits"))
	require.Equal(t, "istio", promnaming.FullName("istio", "-"))
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name string
		m    sinks.Metric
		want promnaming.Names
		err  string
	}{
		{"counter", sinks.Metric{Namespace: "istio", Name: "requests_total", Kind: sinks.Counter, LabelNames: []string{"source-app", "code"}},
			promnaming.Names{Name: "istio_requests_total", Labels: []string{"sourceapp", "code"}, Exposed: []string{"istio_requests_total"}}, ""},
		{"histogram", sinks.Metric{Namespace: "istio", Name: "lat", Kind: sinks.Distribution},
			promnaming.Names{Name: "istio_lat", Exposed: []string{"istio_lat", "istio_lat_bucket", "istio_lat_sum", "istio_lat_count"}}, ""},
		{"le is fine on a counter", sinks.Metric{Name: "x", Kind: sinks.Counter, LabelNames: []string{"le"}},
			promnaming.Names{Name: "x", Labels: []string{"le"}, Exposed: []string{"x"}}, ""},
		{"implicit", sinks.Metric{Name: "x", Implicit: true}, promnaming.Names{}, "Prometheus needs fixed label names"},
		{"empty name", sinks.Metric{Name: "-"}, promnaming.Names{}, "empty once sanitised"},
		{"reserved label", sinks.Metric{Name: "x", LabelNames: []string{"__x"}}, promnaming.Names{}, `"__x" is reserved`},
		{"colliding labels", sinks.Metric{Name: "x", LabelNames: []string{"a.b", "a_b"}}, promnaming.Names{}, `"a.b" and "a_b" both become "a_b"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := promnaming.Resolve(&tc.m)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestCheckAll(t *testing.T) {
	ok := []*sinks.Metric{{Name: "a", Kind: sinks.Counter}, {Name: "b", Kind: sinks.Distribution}}
	require.NoError(t, promnaming.CheckAll(ok))
	err := promnaming.CheckAll([]*sinks.Metric{{Name: "lat", Kind: sinks.Distribution}, {Name: "lat", Namespace: "", Kind: sinks.Gauge}})
	require.ErrorContains(t, err, `metrics[0] ("lat") and metrics[1] ("lat") both become lat`)
	err = promnaming.CheckAll([]*sinks.Metric{{Name: "lat_bucket", Kind: sinks.Counter}, {Name: "lat", Kind: sinks.Distribution}})
	require.ErrorContains(t, err, "metrics[1]: metric lat would expose series lat_bucket, which metric lat_bucket (metrics[0]) already exposes")
}

func TestLabelValue(t *testing.T) {
	require.Equal(t, "ok", promnaming.LabelValue("ok"))
	require.Equal(t, "a\uFFFDb", promnaming.LabelValue("a\xffb"))
}
