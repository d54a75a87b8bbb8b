package exposition_test

import (
	"context"
	"io"
	"strconv"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/promtest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/exposition"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// TestEndToEndWithRealPrometheus sends instances through the adapter's gRPC
// API and reads them back from a real Prometheus server, which scrapes the
// adapter's /metrics and receives its remote writes.
func TestEndToEndWithRealPrometheus(t *testing.T) {
	promtest.Binary(t) // before the adapter starts: an install may take a while

	a, err := adapter.New(adapter.Options{
		GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "e2e-replica",
		Log: quietLogger(), ShutdownTimeout: 10 * time.Second, Tick: 50 * time.Millisecond,
		Sinks: func(env sinks.Env, reg *prometheus.Registry) (map[string]sinks.Sink, []sinks.Factory, error) {
			expo := exposition.New(env)
			return map[string]sinks.Sink{exposition.Key: expo},
				[]sinks.Factory{exposition.NewFactory(expo), remotewrite.NewFactory(env)}, nil
		},
	})
	require.NoError(t, err)
	require.NoError(t, a.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})

	prom := promtest.Start(t, "", a.HTTPAddr())

	// One handler config: exposition and remote write to the same server.
	p := &config.Params{
		Metrics: []*config.Params_MetricInfo{
			{InstanceName: "requestcount.instance.istio-system", Name: "requests_total", Kind: counterKind, LabelNames: []string{"path", "code"}},
			{InstanceName: "requestduration.instance.istio-system", Name: "request_duration_seconds", Kind: distKind, LabelNames: []string{"path"}},
		},
		Prometheus: &config.PrometheusParams{RemoteWrite: &config.RemoteWrite{
			Url: prom.URL + "/api/v1/write", Interval: 500 * time.Millisecond,
			ExternalLabels: map[string]string{"cluster": "e2e"}, ReplicaLabel: "replica",
		}},
	}
	cfg := params(t, p)

	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{})))
	require.NoError(t, err)
	defer conn.Close()
	client := metricpb.NewHandleMetricServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ {
		var instances []*metricpb.InstanceMsg
		for j := 0; j < 3; j++ {
			instances = append(instances, mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str("/a"), "code", mt.Int(200)))
		}
		instances = append(instances,
			mt.Instance("requestcount.instance.istio-system", mt.Int(2), "path", mt.Str("/b"), "code", mt.Int(503)),
			// 30ms to 220ms: the median is near 0.1s.
			mt.Instance("requestduration.instance.istio-system", mt.Duration(time.Duration(30+10*i)*time.Millisecond), "path", mt.Str("/a")))
		_, err := client.HandleMetric(ctx, &metricpb.HandleMetricRequest{Instances: instances, AdapterConfig: cfg, DedupId: strconv.Itoa(i)})
		require.NoError(t, err)
	}
	require.NoError(t, a.Flush(ctx))

	// Scraped: exact counter totals, a sane median.
	prom.WaitValue(t, `istio_requests_total{job="meshmetrics",path="/a",code="200"}`, 60)
	prom.WaitValue(t, `istio_requests_total{job="meshmetrics",path="/b",code="503"}`, 40)
	median := prom.Query(t, `histogram_quantile(0.5, sum by (le) (istio_request_duration_seconds_bucket{job="meshmetrics"}))`)
	require.Len(t, median, 1)
	require.InDelta(t, 0.1, median[0].Value, 0.06, "the median of 30..220ms, interpolated in the default buckets")

	// Remote-written: the same totals, with external and replica labels and
	// without the scrape's job label.
	prom.WaitValue(t, `istio_requests_total{cluster="e2e",replica="e2e-replica",path="/a",code="200"}`, 60)
	got := prom.Query(t, `istio_requests_total{cluster="e2e"}`)
	require.Len(t, got, 2)
	for _, s := range got {
		require.Equal(t, map[string]string{"__name__": "istio_requests_total", "cluster": "e2e", "replica": "e2e-replica",
			"path": s.Labels["path"], "code": s.Labels["code"]}, s.Labels)
	}
	count := prom.Query(t, `istio_request_duration_seconds_count{replica="e2e-replica"}`)
	require.Len(t, count, 1)
	require.Equal(t, 20.0, count[0].Value)
	rwMedian := prom.Query(t, `histogram_quantile(0.5, sum by (le) (istio_request_duration_seconds_bucket{replica="e2e-replica"}))`)
	require.Len(t, rwMedian, 1)
	require.Equal(t, median[0].Value, rwMedian[0].Value, "pushed buckets match scraped ones")
}

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}
