package naming_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/prometheus/naming"
	"github.com/meshmetrics/meshmetrics/adapter/sink"
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
			require.Equal(t, tc.safe, naming.SafeName(tc.in), "Istio's safeName")
			require.Equal(t, tc.metric, naming.MetricName(tc.in))
			require.Equal(t, tc.label, naming.LabelName(tc.in))
		})
	}
}

func TestFullName(t *testing.T) {
	require.Equal(t, "istio_requests_total", naming.FullName("istio", "requests_total"))
	require.Equal(t, "my_app_requestcount", naming.FullName("my.app", "request-count"))
	require.Equal(t, "hits", naming.FullName("", "hits"))
	require.Equal(t, "istio", naming.FullName("istio", "-"))
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name string
		m    sink.Metric
		want naming.Names
		err  string
	}{
		{"counter", sink.Metric{Namespace: "istio", Name: "requests_total", Kind: sink.Counter, LabelNames: []string{"source-app", "code"}},
			naming.Names{Name: "istio_requests_total", Labels: []string{"sourceapp", "code"}, Exposed: []string{"istio_requests_total"}}, ""},
		{"histogram", sink.Metric{Namespace: "istio", Name: "lat", Kind: sink.Distribution},
			naming.Names{Name: "istio_lat", Exposed: []string{"istio_lat", "istio_lat_bucket", "istio_lat_sum", "istio_lat_count"}}, ""},
		{"le is fine on a counter", sink.Metric{Name: "x", Kind: sink.Counter, LabelNames: []string{"le"}},
			naming.Names{Name: "x", Labels: []string{"le"}, Exposed: []string{"x"}}, ""},
		{"implicit", sink.Metric{Name: "x", Implicit: true}, naming.Names{}, "Prometheus needs fixed label names"},
		{"empty name", sink.Metric{Name: "-"}, naming.Names{}, "empty once sanitised"},
		{"reserved label", sink.Metric{Name: "x", LabelNames: []string{"__x"}}, naming.Names{}, `"__x" is reserved`},
		{"colliding labels", sink.Metric{Name: "x", LabelNames: []string{"a.b", "a_b"}}, naming.Names{}, `"a.b" and "a_b" both become "a_b"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := naming.Resolve(&tc.m)
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
	ok := []*sink.Metric{{Name: "a", Kind: sink.Counter}, {Name: "b", Kind: sink.Distribution}}
	require.NoError(t, naming.CheckAll(ok))
	err := naming.CheckAll([]*sink.Metric{{Name: "lat", Kind: sink.Distribution}, {Name: "lat", Namespace: "", Kind: sink.Gauge}})
	require.ErrorContains(t, err, `metrics[0] ("lat") and metrics[1] ("lat") both become lat`)
	err = naming.CheckAll([]*sink.Metric{{Name: "lat_bucket", Kind: sink.Counter}, {Name: "lat", Kind: sink.Distribution}})
	require.ErrorContains(t, err, "metrics[1]: metric lat would expose series lat_bucket, which metric lat_bucket (metrics[0]) already exposes")
}

func TestLabelValue(t *testing.T) {
	require.Equal(t, "ok", naming.LabelValue("ok"))
	require.Equal(t, "a\uFFFDb", naming.LabelValue("a\xffb"))
}
