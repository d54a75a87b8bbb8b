package otelcoltest_test

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp/otelcoltest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp/otlptest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/config"
)

// collectorBinary builds (or reuses) the collector once per test binary
// and reports what it cost.
func collectorBinary(t *testing.T) string {
	t.Helper()
	res, err := otelcoltest.Build()
	require.NoError(t, err)
	how := "cold build"
	if res.Cached {
		how = "warm: cached binary reused"
	}
	t.Logf("figures: OpenTelemetry Collector %s at %s: %s, %v", otelcoltest.Release, res.Path, how, res.Took.Round(time.Millisecond))
	return res.Path
}

// TestOTLPThroughTheOpenTelemetryCollector sends Mixer instances through
// the adapter's gRPC API to the official OpenTelemetry Collector's OTLP
// receiver, over gRPC and over HTTP, cumulative and delta, and reads back
// what the collector's OTLP/HTTP exporter sends on: exact counter totals
// per series, histogram buckets, sum, count, min and max, attributes,
// resource attributes (the replica as service.instance.id), units and
// temporality, over two exports.
func TestOTLPThroughTheOpenTelemetryCollector(t *testing.T) {
	bin := collectorBinary(t)
	for _, tc := range []struct {
		protocol    string
		temporality config.OtlpParams_Temporality
	}{
		{otlp.ProtocolGRPC, config.OtlpParams_CUMULATIVE},
		{otlp.ProtocolHTTP, config.OtlpParams_DELTA},
		{otlp.ProtocolGRPC, config.OtlpParams_DELTA},
		{otlp.ProtocolHTTP, config.OtlpParams_CUMULATIVE},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.protocol, tc.temporality), func(t *testing.T) {
			t.Parallel()
			capture := otlptest.New()
			t.Cleanup(capture.Close)
			col := otelcoltest.Start(t, bin, capture.URL())
			replica := "e2e-" + strconv.Itoa(int(tc.temporality))
			a := startAdapter(t, replica)
			o := &config.OtlpParams{Protocol: tc.protocol, Insecure: true, Temporality: tc.temporality, Interval: time.Hour,
				ResourceAttributes: map[string]string{"deployment.environment": "e2e"}, MinBackoff: 10 * time.Millisecond}
			if tc.protocol == otlp.ProtocolGRPC {
				o.Endpoint = col.GRPC
			} else {
				o.Endpoint = col.HTTP // the sink adds /v1/metrics
			}
			cfg := anyOf(t, &config.Params{Otlp: o, Metrics: []*config.Params_MetricInfo{
				{InstanceName: "requestcount", Name: "requests", Kind: config.Params_MetricInfo_COUNTER, LabelNames: []string{"path", "code"}},
				{InstanceName: "requestduration", Name: "request_duration", Kind: config.Params_MetricInfo_DISTRIBUTION,
					LabelNames: []string{"path"}, DurationUnit: config.DurationUnit_SECONDS,
					Buckets: &config.Params_MetricInfo_BucketsDefinition{Definition: &config.Params_MetricInfo_BucketsDefinition_ExplicitBuckets{
						ExplicitBuckets: &config.Params_MetricInfo_BucketsDefinition_Explicit{Bounds: []float64{0.01, 0.1, 1}}}}},
				{InstanceName: "inflight", Name: "in_flight", Kind: config.Params_MetricInfo_GAUGE},
			}})
			conn := dial(t, a.GRPCAddr())
			durations := []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond, 700 * time.Millisecond, 3 * time.Second}

			// Two exports: 3 calls, then 2 more.
			sent := map[string]float64{}
			var hist [4]uint64
			var histSum float64
			send := func(calls int, first int) {
				for c := first; c < first+calls; c++ {
					var ins []*metricpb.InstanceMsg
					for i := 0; i < 20; i++ {
						path, code := fmt.Sprintf("/p%d", i%3), []string{"200", "503"}[i%2]
						ins = append(ins, &metricpb.InstanceMsg{Name: "requestcount.instance.istio-system", Value: mt.Int(1),
							Dimensions: map[string]*policypb.Value{"path": mt.Str(path), "code": mt.Str(code)}})
						sent[path+"|"+code]++
						d := durations[(c+i)%len(durations)]
						ins = append(ins, &metricpb.InstanceMsg{Name: "requestduration.instance.istio-system", Value: mt.Duration(d),
							Dimensions: map[string]*policypb.Value{"path": mt.Str("/h")}})
						hist[bucketOf(d.Seconds(), []float64{0.01, 0.1, 1})]++
						histSum += d.Seconds()
					}
					ins = append(ins, &metricpb.InstanceMsg{Name: "inflight.instance.istio-system", Value: mt.Int(int64(c))})
					_, err := metricpb.NewHandleMetricServiceClient(conn).HandleMetric(context.Background(),
						&metricpb.HandleMetricRequest{AdapterConfig: cfg, Instances: ins, DedupId: strconv.Itoa(c)})
					require.NoError(t, err)
				}
			}
			send(3, 0)
			flushAdapter(t, a)
			send(2, 3)
			flushAdapter(t, a)

			require.Empty(t, capture.Violations())
			wantTemporality := metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
			if tc.temporality == config.OtlpParams_DELTA {
				wantTemporality = metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
			}
			var total float64
			for key, n := range sent {
				total += n
				path, code := key[:3], key[4:]
				ps := capture.Series("istio.requests")[otlptest.SeriesKey("istio.requests", replica, map[string]string{"path": path, "code": code})]
				require.Len(t, ps, 2, "a point per export for %s", key)
				for _, p := range ps {
					require.Equal(t, wantTemporality, p.Temporality)
					require.True(t, p.Monotonic)
					require.Equal(t, map[string]string{"service.name": "meshmetrics", "service.instance.id": replica, "deployment.environment": "e2e"}, p.ResourceAttr)
				}
				if tc.temporality == config.OtlpParams_DELTA {
					require.Equal(t, n, ps[0].Value+ps[1].Value, key)
					require.Equal(t, ps[0].Time, ps[1].Start, "the second delta starts where the first ended")
				} else {
					require.Equal(t, n, ps[1].Value, key)
					require.Equal(t, ps[0].Start, ps[1].Start, "one cumulative run")
					require.Less(t, ps[0].Value, ps[1].Value)
				}
			}
			require.Equal(t, float64(100), total)
			require.Equal(t, total, capture.Total("istio.requests"), "every instance, exactly once")

			count, sum, buckets := capture.HistogramTotal("istio.request_duration")
			require.Equal(t, uint64(100), count)
			require.InDelta(t, histSum, sum, 1e-9)
			require.Equal(t, hist[:], buckets)
			for _, ps := range capture.Series("istio.request_duration") {
				for _, p := range ps {
					require.Equal(t, "s", p.Unit)
					require.Equal(t, []float64{0.01, 0.1, 1}, p.Bounds)
					require.True(t, p.HasMinMax)
					require.Equal(t, wantTemporality, p.Temporality)
				}
				last := ps[len(ps)-1]
				require.Equal(t, 3.0, last.Max)
				require.Equal(t, 0.005, ps[0].Min)
			}
			gauges := capture.Series("istio.in_flight")
			require.Len(t, gauges, 1)
			for _, ps := range gauges {
				require.Equal(t, "gauge", ps[len(ps)-1].Kind)
				require.Equal(t, 4.0, ps[len(ps)-1].Value, "the last value sent")
			}
			t.Logf("figures %s: %d instances through the collector, %d data points read back", t.Name(), 2*100+5, capture.Stats().Points)
		})
	}
}

func bucketOf(v float64, bounds []float64) int {
	for i, b := range bounds {
		if v <= b {
			return i
		}
	}
	return len(bounds)
}

func startAdapter(t *testing.T, replica string) *adapter.Adapter {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	a, err := adapter.New(adapter.Options{GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: replica, Log: log,
		ShutdownTimeout: 10 * time.Second, Tick: 5 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, a.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	return a
}

func flushAdapter(t *testing.T, a *adapter.Adapter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, a.Flush(ctx))
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{})))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

func anyOf(t testing.TB, p *config.Params) *types.Any {
	b, err := p.Marshal()
	require.NoError(t, err)
	return &types.Any{TypeUrl: config.TypeURL, Value: b}
}
