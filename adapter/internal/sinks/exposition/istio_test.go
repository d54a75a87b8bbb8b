package exposition_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/gogo/protobuf/jsonpb"
	"github.com/gogo/protobuf/types"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/exposition"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/config"
)

// istioParams reads the params of Istio's own Prometheus handler, as Mixer
// would send them: YAML (proto or lowerCamel names) to the params message.
// Mixer accepts Go durations ("10m") where protobuf JSON wants seconds.
func istioParams(t *testing.T) *config.Params {
	t.Helper()
	store, err := crd.Load("../../../../testdata/prometheus/istio-handler.yaml")
	require.NoError(t, err)
	handlers := store.Handlers()
	require.Len(t, handlers, 1)
	raw := handlers[0].Params
	policy := raw["metricsExpirationPolicy"].(map[string]any)
	d, err := time.ParseDuration(policy["metricsExpiryDuration"].(string))
	require.NoError(t, err)
	policy["metricsExpiryDuration"] = fmt.Sprintf("%gs", d.Seconds())
	js, err := json.Marshal(raw)
	require.NoError(t, err)
	p := &config.Params{}
	require.NoError(t, jsonpb.UnmarshalString(string(js), p))
	return p
}

var istioHTTPLabels = []string{"reporter", "source_app", "source_principal", "source_workload", "source_workload_namespace",
	"source_version", "destination_app", "destination_principal", "destination_workload", "destination_workload_namespace",
	"destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
	"request_protocol", "response_code", "response_flags", "permissive_response_code", "permissive_response_policyid",
	"connection_security_policy"}

func TestIstioPrometheusHandlerConfigWorksUnchanged(t *testing.T) {
	p := istioParams(t)
	require.Len(t, p.Metrics, 8)
	require.Equal(t, 10*time.Minute, p.MetricsExpirationPolicy.MetricsExpiryDuration)

	f := newFixture(t, 0)
	cfg := params(t, p)
	dims := func(code int64) []any {
		var out []any
		for _, l := range istioHTTPLabels {
			switch l {
			case "response_code":
				out = append(out, l, mt.Int(code))
			case "reporter":
				out = append(out, l, mt.Str("destination"))
			case "destination_service":
				out = append(out, l, mt.Str("reviews.default.svc.cluster.local"))
			default:
				out = append(out, l, mt.Str("x"))
			}
		}
		return append(out, "not_a_label", mt.Str("ignored"))
	}
	var instances []*metricpb.InstanceMsg
	for i := 0; i < 3; i++ {
		instances = append(instances,
			mt.Instance("requestcount.instance.istio-system", mt.Int(1), dims(200)...),
			mt.Instance("requestduration.instance.istio-system", mt.Duration(time.Duration(i+1)*40*time.Millisecond), dims(200)...),
			mt.Instance("requestsize.instance.istio-system", mt.Int(1500), dims(200)...),
			mt.Instance("responsesize.instance.istio-system", mt.Int(25), dims(200)...))
	}
	instances = append(instances, mt.Instance("requestcount.instance.istio-system", mt.Int(1), dims(503)...),
		mt.Instance("tcpbytesent.instance.istio-system", mt.Int(4096), "reporter", mt.Str("source")),
		mt.Instance("tcpconnectionsopened.instance.istio-system", mt.Int(1), "reporter", mt.Str("source")))
	require.NoError(t, f.handle(t, cfg, instances...))

	out := f.scrape(t)
	labels200 := `connection_security_policy="x",destination_app="x",destination_principal="x",destination_service="reviews.default.svc.cluster.local",destination_service_name="x",destination_service_namespace="x",destination_version="x",destination_workload="x",destination_workload_namespace="x",permissive_response_code="x",permissive_response_policyid="x",reporter="destination",request_protocol="x",response_code="200",response_flags="x",source_app="x",source_principal="x",source_version="x",source_workload="x",source_workload_namespace="x"`
	for _, want := range []string{
		"# TYPE istio_requests_total counter",
		"istio_requests_total{" + labels200 + "} 3",
		"istio_requests_total{" + strings.Replace(labels200, `response_code="200"`, `response_code="503"`, 1) + "} 1",
		"# TYPE istio_request_duration_seconds histogram",
		"istio_request_duration_seconds_bucket{" + labels200 + `,le="0.05"} 1`,
		"istio_request_duration_seconds_bucket{" + labels200 + `,le="0.1"} 2`,
		"istio_request_duration_seconds_bucket{" + labels200 + `,le="0.25"} 3`,
		"istio_request_duration_seconds_sum{" + labels200 + "} 0.24",
		"istio_request_duration_seconds_count{" + labels200 + "} 3",
		"istio_request_bytes_bucket{" + labels200 + `,le="1000"} 0`,
		"istio_request_bytes_bucket{" + labels200 + `,le="10000"} 3`,
		"istio_request_bytes_bucket{" + labels200 + `,le="1e+08"} 3`,
		"istio_response_bytes_bucket{" + labels200 + `,le="100"} 3`,
		`istio_tcp_sent_bytes_total{connection_security_policy="",destination_app="",destination_principal="",destination_service="",destination_service_name="",destination_service_namespace="",destination_version="",destination_workload="",destination_workload_namespace="",reporter="source",response_flags="",source_app="",source_principal="",source_version="",source_workload="",source_workload_namespace=""} 4096`,
		"# TYPE istio_tcp_connections_opened_total counter",
	} {
		require.Contains(t, out, want+"\n")
	}
	require.NotContains(t, out, "not_a_label")
	require.NotContains(t, out, "istio_tcp_received_bytes_total", "no instance, no series")
}

// TestIstioConfigIsBoundedByTheSinkCap: Istio's handler config sets no
// limits, and with no per-metric cap by default the sink's --max-series is
// what stops its series, counted as sink_series_limit (series's
// TestIstioConfigKeepsAMidSizeMeshAtTheDefaults shows 100k series kept at
// the defaults).
func TestIstioConfigIsBoundedByTheSinkCap(t *testing.T) {
	f := newFixture(t, 1000)
	cfg := params(t, istioParams(t))
	sendIstioSeries(t, f, cfg, 0, 1500)
	require.NoError(t, f.sinks.Flush(context.Background()))
	require.Zero(t, dropped(f, "series_limit"))
	require.Equal(t, 500.0, dropped(f, "sink_series_limit"))
	require.Equal(t, 1000.0, testutil.ToFloat64(f.metrics.SinkSeries.WithLabelValues(exposition.Key)))
}

// sendIstioSeries sends one requestcount instance for each of the label
// sets from to to (each a distinct source workload), in requests of 5000.
func sendIstioSeries(t *testing.T, f *fixture, cfg *types.Any, from, to int) {
	t.Helper()
	for start := from; start < to; start += 5000 {
		var instances []*metricpb.InstanceMsg
		for i := start; i < min(start+5000, to); i++ {
			var dims []any
			for _, l := range istioHTTPLabels {
				v := "x"
				if l == "source_workload" {
					v = fmt.Sprintf("w%d", i)
				}
				dims = append(dims, l, mt.Str(v))
			}
			instances = append(instances, mt.Instance("requestcount.instance.istio-system", mt.Int(1), dims...))
		}
		require.NoError(t, f.handle(t, cfg, instances...))
	}
}
