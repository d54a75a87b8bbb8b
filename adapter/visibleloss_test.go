package adapter_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/rwtest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/config"
)

// instancesOf makes one instance of name per path.
func instancesOf(name string, paths ...string) []*metricpb.InstanceMsg {
	out := make([]*metricpb.InstanceMsg, len(paths))
	for i, p := range paths {
		out[i] = &metricpb.InstanceMsg{Name: name, Value: mt.Int(1), Dimensions: map[string]*policypb.Value{"path": mt.Str(p)}}
	}
	return out
}

// TestSeriesCapsAreGaugedAndEachMetricsFirstDropIsLogged: the exposition's
// series and their cap are on /metrics before any traffic; a metric that
// reaches its max_series_per_metric, and a sink that reaches --max-series,
// are each logged once with the metric, the cap and its value, however
// many instances are dropped after.
func TestSeriesCapsAreGaugedAndEachMetricsFirstDropIsLogged(t *testing.T) {
	h := start(t, func(o *adapter.Options) {
		o.Sinks = nil // the built-in sinks
		o.MaxSeries = 3
	})
	_, body := getBody(t, h, "/metrics")
	require.Contains(t, body, `meshmetrics_sink_series{sink="prometheus"} 0`+"\n", "the gauge exists before the first series")
	require.Contains(t, body, `meshmetrics_sink_series_limit{sink="prometheus"} 3`+"\n")

	p := &config.Params{Limits: &config.Limits{MaxSeriesPerMetric: 2}, Metrics: []*config.Params_MetricInfo{
		{InstanceName: "a.instance.istio-system", Kind: config.Params_MetricInfo_COUNTER, Name: "a", LabelNames: []string{"path"}},
		{InstanceName: "b.instance.istio-system", Kind: config.Params_MetricInfo_COUNTER, Name: "b", LabelNames: []string{"path"}},
	}}
	send := func(name string, paths ...string) {
		t.Helper()
		require.NoError(t, h.send(t, &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, p), Instances: instancesOf(name, paths...)}))
		require.NoError(t, h.a.Flush(t.Context()))
	}
	send("a.instance.istio-system", "/1", "/2", "/3", "/4")
	send("a.instance.istio-system", "/5", "/6", "/1")
	send("b.instance.istio-system", "/1", "/2", "/3")
	send("b.instance.istio-system", "/4")

	_, body = getBody(t, h, "/metrics")
	require.Contains(t, body, `meshmetrics_sink_series{sink="prometheus"} 3`+"\n")
	require.Contains(t, body, `meshmetrics_instances_dropped_total{reason="series_limit",sink="prometheus"} 4`+"\n")
	require.Contains(t, body, `meshmetrics_instances_dropped_total{reason="sink_series_limit",sink="prometheus"} 3`+"\n")

	logs := h.logText()
	require.Equal(t, 1, strings.Count(logs, "metric istio_a reached its handler's limits.max_series_per_metric (2) in sink prometheus"), logs)
	require.Equal(t, 1, strings.Count(logs, "sink prometheus holds --max-series (3) series: instances of new series of istio_b"), logs)
	require.Equal(t, 2, strings.Count(logs, "level=warning"), "one line per metric and cap, not one per dropped instance:\n%s", logs)
	require.Contains(t, logs, `reason=series_limit`)
	require.Contains(t, logs, `reason=sink_series_limit`)
}

// TestAPushSinksSeriesGaugesLiveAndGoWithIt: a remote-write sink's series
// gauge and cap exist from its start and are removed when its last
// handler config is closed.
func TestAPushSinksSeriesGaugesLiveAndGoWithIt(t *testing.T) {
	rw := rwtest.New()
	defer rw.Close()
	h := start(t, func(o *adapter.Options) {
		o.Sinks = nil
		o.MaxSeries = 1000
		o.HandlerIdleTimeout = 50 * time.Millisecond
	})
	p := &config.Params{Metrics: counterParams.Metrics,
		Prometheus: &config.PrometheusParams{DisableExposition: true, RemoteWrite: &config.RemoteWrite{Url: rw.URL(), Interval: time.Hour}}}
	require.NoError(t, h.send(t, &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, p),
		Instances: instancesOf("analyticcounter.instance.istio-system", "/x")}))
	require.NoError(t, h.a.Flush(t.Context()))
	_, body := getBody(t, h, "/metrics")
	var sink string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, `meshmetrics_sink_series_limit{sink="remote_write:`) {
			sink = strings.TrimSuffix(strings.TrimPrefix(line, `meshmetrics_sink_series_limit{sink="`), `"} 1000`)
		}
	}
	require.NotEmpty(t, sink, "the remote-write sink's cap is gauged:\n%s", body)
	require.Contains(t, body, fmt.Sprintf(`meshmetrics_sink_series{sink=%q} 1`+"\n", sink))
	require.Contains(t, body, fmt.Sprintf(`meshmetrics_sink_series_limit{sink=%q} 1000`+"\n", sink))

	require.Eventually(t, func() bool {
		code, body := getBody(t, h, "/metrics")
		return code == http.StatusOK && !strings.Contains(body, fmt.Sprintf(`meshmetrics_sink_series{sink=%q}`, sink)) &&
			!strings.Contains(body, fmt.Sprintf(`meshmetrics_sink_series_limit{sink=%q}`, sink))
	}, 10*time.Second, 20*time.Millisecond, "the closed sink's gauges go")
	_, body = getBody(t, h, "/metrics")
	require.Contains(t, body, `meshmetrics_sink_series_limit{sink="prometheus"} 1000`+"\n", "the permanent sink's stay")
}
