package exposition_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/dedup"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/exposition"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// fixture drives the exposition the way the adapter does: a handler cache
// whose handlers bind to the exposition, added to a sink set as a permanent
// sink, and a registry like the one /metrics serves.
type fixture struct {
	reg     *prometheus.Registry
	expo    *exposition.Sink
	sinks   *sinks.Set
	cache   *handler.Cache
	metrics *telemetry.Metrics

	*sinktest.Clock
}

func newFixture(t *testing.T, maxSeries int) *fixture {
	t.Helper()
	f := &fixture{reg: prometheus.NewRegistry(), sinks: sinks.NewSet(100000, 5*time.Second), Clock: sinktest.NewClock(time.Unix(1600000000, 0))}
	f.metrics = telemetry.New(f.reg, func() int { return 0 }, f.sinks)
	env := sinks.Env{Metrics: f.metrics, MaxSeries: maxSeries, Now: f.clock, Tick: 5 * time.Millisecond, Replica: "test"}
	f.expo = exposition.New(env)
	f.sinks.AddPermanent(exposition.Key, f.expo)
	f.cache = handler.NewCache(handler.Deps{Sinks: f.sinks, Factories: []sinks.Factory{exposition.NewFactory(f.expo)}, Dedup: dedup.New(dedup.Options{Window: time.Minute})},
		handler.CacheOptions{Size: 16, IdleTimeout: time.Hour, Now: f.clock})
	t.Cleanup(func() { require.NoError(t, f.sinks.Close(context.Background())) })
	return f
}

func (f *fixture) clock() time.Time { return f.Now() }

func (f *fixture) advance(d time.Duration) { f.Advance(d) }

func params(t *testing.T, p *config.Params) *types.Any {
	t.Helper()
	b, err := p.Marshal()
	require.NoError(t, err)
	return &types.Any{TypeUrl: config.TypeURL, Value: b}
}

// handle sends one HandleMetric request through the cache and its handler.
func (f *fixture) handle(t *testing.T, cfg *types.Any, instances ...*metricpb.InstanceMsg) error {
	t.Helper()
	raw, err := (&metricpb.HandleMetricRequest{Instances: instances, AdapterConfig: cfg}).Marshal()
	require.NoError(t, err)
	var req handlemetric.Request
	require.NoError(t, req.Parse(raw))
	h, err := f.cache.Get(req.AdapterConfig)
	if err != nil {
		return err
	}
	defer h.Done()
	o := h.Handle(&req, f.clock())
	return o.Err()
}

// scrape waits for queued samples and returns the exposition's series in
// the text format, names filtered to those given. The whole output is parsed
// with prometheus/common's text parser first, so every assertion also checks
// that it is valid exposition text.
func (f *fixture) scrape(t *testing.T, names ...string) string {
	t.Helper()
	require.NoError(t, f.sinks.Flush(context.Background()))
	text := writeText(t, f.expo)
	if len(names) == 0 {
		return text
	}
	var b strings.Builder
	keep := false
	for _, line := range strings.SplitAfter(text, "\n") {
		if strings.HasPrefix(line, "# HELP ") {
			keep = contains(names, strings.Fields(line)[2])
		}
		if keep {
			b.WriteString(line)
		}
	}
	return b.String()
}

// writeText returns WriteText's output after checking that it parses.
func writeText(t testing.TB, e *exposition.Sink) string {
	t.Helper()
	var b strings.Builder
	require.NoError(t, e.WriteText(&b))
	// Legacy validation: Prometheus 2.x names, which every scraper accepts.
	parser := expfmt.NewTextParser(model.LegacyValidation)
	_, err := parser.TextToMetricFamilies(strings.NewReader(b.String()))
	require.NoError(t, err, "the exposition must be valid text format:\n%s", b.String())
	return b.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func dropped(f *fixture, reason string) float64 {
	return testutil.ToFloat64(f.metrics.InstancesDropped.WithLabelValues(exposition.Key, reason))
}

func metric(instance, name string, kind config.Params_MetricInfo_Kind, labels ...string) *config.Params_MetricInfo {
	return &config.Params_MetricInfo{InstanceName: instance, Name: name, Kind: kind, LabelNames: labels}
}

func toInstances(in []any) []*metricpb.InstanceMsg {
	out := make([]*metricpb.InstanceMsg, len(in))
	for i, x := range in {
		out[i] = x.(*metricpb.InstanceMsg)
	}
	return out
}
