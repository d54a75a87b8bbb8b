package faults_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/gogo/protobuf/types"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// TestHandlerCacheIsBoundedByBytes is the sixth attack, against
// the binary: three handler configs within the caps of one config (10,000
// metrics of 256 label names each, 27 MB encoded) took the RSS to 2.28 GB,
// since the cache kept 64 configs whatever their size. The cache is now
// bounded by an estimate of its handlers' memory as well
// (--handler-cache-max-bytes, 1 GiB by default; such a config is estimated
// at about 550 MiB): each call is answered and its instance exposed, the
// cache's estimate stays under the bound, the older configs are closed,
// and the peak RSS stays below 1.5 GiB. A config estimated above the bound
// on its own is refused, and counted.
func TestHandlerCacheIsBoundedByBytes(t *testing.T) {
	const (
		configs = 3
		metrics = config.MaxMetricsPerConfig
		labels  = config.MaxLabelNames
	)
	bin := buildAdapter(t)
	p := run(t, bin)
	pid := p.cmd.Process.Pid
	client := metricpb.NewHandleMetricServiceClient(dial(t, p.grpc))
	before := procStatus(t, pid, "VmHWM")
	names := make([]string, labels)
	for j := range names {
		names[j] = fmt.Sprintf("label_%d", j)
	}
	ms := make([]*config.Params_MetricInfo, metrics)
	for i := range ms {
		ms[i] = &config.Params_MetricInfo{InstanceName: fmt.Sprintf("m%d.instance.istio-system", i), Kind: config.Params_MetricInfo_COUNTER,
			Name: fmt.Sprintf("c0_m%d", i), LabelNames: names}
	}
	first := anyOf(t, &config.Params{Metrics: ms})
	for c := range configs {
		// Another config: the metric names c<c>_m<i>, of the same length,
		// so the encoded bytes only change in place.
		cfg := &types.Any{TypeUrl: first.TypeUrl, Value: bytes.ReplaceAll(first.Value, []byte("c0_m"), []byte(fmt.Sprintf("c%d_m", c)))}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		_, err := client.HandleMetric(ctx, &metricpb.HandleMetricRequest{AdapterConfig: cfg,
			Instances: []*metricpb.InstanceMsg{{Name: "m0.instance.istio-system", Value: mt.Int(1)}}})
		cancel()
		require.NoError(t, err, "config %d", c)
		m := p.metrics(t)
		require.LessOrEqual(t, value(m, "meshmetrics_handler_cache_bytes", "", nil), float64(config.DefaultHandlerCacheMaxBytes))
	}
	peak := procStatus(t, pid, "VmHWM")
	m := p.metrics(t)
	require.Equal(t, float64(configs), value(m, "meshmetrics_handlers_built_total", "", nil))
	require.Equal(t, float64(configs-1), value(m, "meshmetrics_handlers_closed_total", "", nil), "the older configs made room")
	require.Equal(t, 1.0, value(m, "meshmetrics_handler_cache_size", "", nil))
	for c := range configs {
		require.Equal(t, 1.0, value(m, fmt.Sprintf("istio_c%d_m0", c), "", nil), "config %d's instance is exposed (its series are the sink's)", c)
	}
	t.Logf("figures %s: %d configs of %d metrics x %d labels; cache estimate %.0f MiB; peak RSS %d MiB before, %d MiB after",
		t.Name(), configs, metrics, labels, value(m, "meshmetrics_handler_cache_bytes", "", nil)/(1<<20), before>>20, peak>>20)
	require.Less(t, peak, int64(3<<29), "1.5 GiB")

	// A config too large for the bound on its own is refused, not built.
	small := run(t, bin, "--handler-cache-max-bytes=67108864")
	for _, m := range ms {
		m.LabelNames = names[:64]
	}
	_, err := metricpb.NewHandleMetricServiceClient(dial(t, small.grpc)).HandleMetric(context.Background(), &metricpb.HandleMetricRequest{
		AdapterConfig: anyOf(t, &config.Params{Metrics: ms}), Instances: []*metricpb.InstanceMsg{{Name: "m0.instance.istio-system", Value: mt.Int(1)}}})
	require.ErrorContains(t, err, "--handler-cache-max-bytes")
	m = small.metrics(t)
	require.Equal(t, 1.0, value(m, "meshmetrics_config_errors_total", "", map[string]string{"reason": "too_large"}))
	require.Equal(t, 1.0, value(m, "meshmetrics_instances_rejected_total", "", map[string]string{"reason": "bad_config"}))
	require.Zero(t, value(m, "meshmetrics_handlers_built_total", "", nil))
}
