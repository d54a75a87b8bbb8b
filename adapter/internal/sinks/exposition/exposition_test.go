package exposition_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/exposition"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/config"
)

var (
	counterKind = config.Params_MetricInfo_COUNTER
	gaugeKind   = config.Params_MetricInfo_GAUGE
	distKind    = config.Params_MetricInfo_DISTRIBUTION
)

func TestCountersAddGaugesSetDistributionsObserve(t *testing.T) {
	f := newFixture(t, 0)
	latency := metric("latency", "request_duration_seconds", distKind, "path")
	latency.Description = "How long requests take."
	latency.Buckets = &config.Params_MetricInfo_BucketsDefinition{Definition: &config.Params_MetricInfo_BucketsDefinition_ExplicitBuckets{
		ExplicitBuckets: &config.Params_MetricInfo_BucketsDefinition_Explicit{Bounds: []float64{0.1, 1}}}}
	cfg := params(t, &config.Params{Metrics: []*config.Params_MetricInfo{
		metric("requestcount.instance.istio-system", "requests_total", counterKind, "path", "code"),
		metric("inflight", "in_flight", gaugeKind, "path"),
		latency,
	}})
	require.NoError(t, f.handle(t, cfg,
		mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str("/a"), "code", mt.Int(200), "extra", mt.Str("dropped")),
		mt.Instance("requestcount.instance.istio-system", mt.Int(2), "path", mt.Str("/a"), "code", mt.Int(200)),
		mt.Instance("requestcount.instance.istio-system", mt.Double(0.5), "code", mt.Int(503)),
		mt.Instance("inflight", mt.Int(7), "path", mt.Str("/a")),
		mt.Instance("inflight", mt.Int(3), "path", mt.Str("/a")),
		mt.Instance("latency", mt.Duration(50*time.Millisecond), "path", mt.Str("/a")),
		mt.Instance("latency", mt.Duration(100*time.Millisecond), "path", mt.Str("/a")),
		mt.Instance("latency", mt.Duration(2*time.Second), "path", mt.Str("/a")),
	))
	require.Equal(t, `# HELP istio_in_flight in_flight
# TYPE istio_in_flight gauge
istio_in_flight{path="/a"} 3
# HELP istio_request_duration_seconds How long requests take.
# TYPE istio_request_duration_seconds histogram
istio_request_duration_seconds_bucket{path="/a",le="0.1"} 2
istio_request_duration_seconds_bucket{path="/a",le="1"} 2
istio_request_duration_seconds_bucket{path="/a",le="+Inf"} 3
istio_request_duration_seconds_sum{path="/a"} 2.15
istio_request_duration_seconds_count{path="/a"} 3
# HELP istio_requests_total requests_total
# TYPE istio_requests_total counter
istio_requests_total{code="200",path="/a"} 3
istio_requests_total{code="503",path=""} 0.5
`, f.scrape(t))
}

func TestDefaultBucketsAndDurationUnits(t *testing.T) {
	f := newFixture(t, 0)
	ms := metric("latency", "latency_ms", distKind)
	ms.DurationUnit = config.DurationUnit_MILLISECONDS
	ms.Buckets = &config.Params_MetricInfo_BucketsDefinition{Definition: &config.Params_MetricInfo_BucketsDefinition_LinearBuckets{
		LinearBuckets: &config.Params_MetricInfo_BucketsDefinition_Linear{NumFiniteBuckets: 2, Width: 100, Offset: 100}}}
	cfg := params(t, &config.Params{Metrics: []*config.Params_MetricInfo{metric("latency", "latency", distKind), ms}})
	require.NoError(t, f.handle(t, cfg, mt.Instance("latency", mt.Duration(150*time.Millisecond))))
	out := f.scrape(t)
	for _, want := range []string{
		`istio_latency_bucket{le="0.005"} 0`, `istio_latency_bucket{le="0.25"} 1`, `istio_latency_bucket{le="10"} 1`,
		`istio_latency_sum 0.15`,
		`istio_latency_ms_bucket{le="100"} 0`, `istio_latency_ms_bucket{le="200"} 1`, `istio_latency_ms_bucket{le="300"} 1`,
		`istio_latency_ms_sum 150`,
	} {
		require.Contains(t, out, want+"\n")
	}
}

func TestConfigsThatCannotBeExposedAreRefused(t *testing.T) {
	tests := []struct {
		name    string
		metrics []*config.Params_MetricInfo
		want    string
	}{
		{"sanitised names collide", []*config.Params_MetricInfo{metric("a", "request-count", counterKind), metric("b", "requestcount", counterKind)},
			`metrics[0] ("request-count") and metrics[1] ("requestcount") both become istio_requestcount`},
		{"histogram suffix collides", []*config.Params_MetricInfo{metric("a", "lat", distKind), metric("b", "lat_count", counterKind)},
			"metric istio_lat_count would expose series istio_lat_count, which metric istio_lat (metrics[0]) already exposes"},
		{"label names collide", []*config.Params_MetricInfo{metric("a", "x", counterKind, "source-app", "sourceapp")},
			`label names "source-app" and "sourceapp" both become "sourceapp"`},
		{"reserved label", []*config.Params_MetricInfo{metric("a", "x", counterKind, "__name__")}, "reserved"},
		{"le on a histogram", []*config.Params_MetricInfo{metric("a", "x", distKind, "le")}, `label named "le"`},
		{"empty label", []*config.Params_MetricInfo{metric("a", "x", counterKind, "-")}, "empty once sanitised"},
		{"adapter's own prefix", []*config.Params_MetricInfo{{InstanceName: "a", Namespace: "meshmetrics", Name: "x", Kind: counterKind}},
			`prefix "meshmetrics_" is reserved`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 0)
			err := f.handle(t, params(t, &config.Params{Metrics: tc.metrics}), mt.Instance("a", mt.Int(1)))
			require.ErrorIs(t, err, config.ErrInvalid)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestBindRefusesImplicitMetrics(t *testing.T) {
	f := newFixture(t, 0)
	_, err := f.expo.Bind(&sinks.Metric{Name: "requestsize", Kind: sinks.Distribution, Implicit: true})
	require.ErrorContains(t, err, "Prometheus needs fixed label names")
}

func TestBindRefusesAClashWithAnotherConfigsHistogram(t *testing.T) {
	f := newFixture(t, 0)
	_, err := f.expo.Bind(&sinks.Metric{Namespace: "istio", Name: "lat", Kind: sinks.Distribution, Buckets: []float64{1}})
	require.NoError(t, err)
	_, err = f.expo.Bind(&sinks.Metric{Namespace: "istio", Name: "lat_sum", Kind: sinks.Gauge})
	require.ErrorContains(t, err, "metric istio_lat_sum would expose istio_lat_sum, which metric istio_lat already exposes")
}

func TestLabelValuesAreMadeValidUTF8(t *testing.T) {
	f := newFixture(t, 0)
	cfg := params(t, &config.Params{Metrics: []*config.Params_MetricInfo{metric("a", "hits", counterKind, "agent")}})
	require.NoError(t, f.handle(t, cfg, mt.Instance("a", mt.Int(1), "agent", mt.Str("curl\xff\xfe/7"))))
	require.Contains(t, f.scrape(t), "istio_hits{agent=\"curl\uFFFD/7\"} 1\n")
}

func TestSeriesCapsDropAndCount(t *testing.T) {
	f := newFixture(t, 3) // --max-series 3 for the sink
	cfg := params(t, &config.Params{
		Metrics: []*config.Params_MetricInfo{metric("a", "a", counterKind, "l"), metric("b", "b", counterKind, "l")},
		Limits:  &config.Limits{MaxSeriesPerMetric: 2},
	})
	var instances []any
	for i := 0; i < 4; i++ {
		instances = append(instances, mt.Instance("a", mt.Int(1), "l", mt.Str(fmt.Sprint(i))), mt.Instance("b", mt.Int(1), "l", mt.Str(fmt.Sprint(i))))
	}
	require.NoError(t, f.handle(t, cfg, toInstances(instances)...))
	out := f.scrape(t)
	require.Equal(t, 2, strings.Count(out, "istio_a{"), "per-metric cap")
	require.Equal(t, 1, strings.Count(out, "istio_b{"), "the sink's cap leaves one series for b")
	require.Equal(t, 2.0, dropped(f, telemetry.DropSeriesLimit), "a's 3rd and 4th series")
	require.Equal(t, 3.0, dropped(f, telemetry.DropSinkSeriesLimit), "b's 2nd to 4th series")
	require.Equal(t, 3, f.expo.Len())
}

func TestIdleSeriesExpire(t *testing.T) {
	f := newFixture(t, 0)
	cfg := params(t, &config.Params{
		Metrics:                 []*config.Params_MetricInfo{metric("a", "hits", counterKind, "l")},
		MetricsExpirationPolicy: &config.Params_MetricsExpirationPolicy{MetricsExpiryDuration: time.Minute, ExpiryCheckIntervalDuration: time.Second},
	})
	// Each sample is applied before the clock moves (Flush), so that the
	// series count below goes from 2 to 1 only by expiry, never because
	// "new" was not applied yet.
	require.NoError(t, f.handle(t, cfg, mt.Instance("a", mt.Int(1), "l", mt.Str("old"))))
	require.NoError(t, f.sinks.Flush(context.Background()))
	f.advance(50 * time.Second)
	require.NoError(t, f.handle(t, cfg, mt.Instance("a", mt.Int(1), "l", mt.Str("new"))))
	require.NoError(t, f.sinks.Flush(context.Background()))
	require.Equal(t, 2, f.expo.Len())
	f.advance(20 * time.Second) // "old" idle 70s, "new" 20s
	require.Eventually(t, func() bool { return f.expo.Len() == 1 }, 5*time.Second, 5*time.Millisecond)
	require.Equal(t, "# HELP istio_hits hits\n# TYPE istio_hits counter\nistio_hits{l=\"new\"} 1\n", f.scrape(t))
}

func TestConfigChangeKeepsSeriesAndRedefinitionSupersedes(t *testing.T) {
	f := newFixture(t, 0)
	v1 := &config.Params{Metrics: []*config.Params_MetricInfo{
		metric("requestcount", "requests_total", counterKind, "path"),
		metric("inflight", "in_flight", gaugeKind),
	}}
	require.NoError(t, f.handle(t, params(t, v1), mt.Instance("requestcount", mt.Int(1), "path", mt.Str("/a")), mt.Instance("inflight", mt.Int(4))))

	// Same definitions, another limit: a new handler config, the same series.
	v2 := *v1
	v2.Limits = &config.Limits{MaxSeriesPerMetric: 10}
	require.NoError(t, f.handle(t, params(t, &v2), mt.Instance("requestcount", mt.Int(1), "path", mt.Str("/a"))))
	require.Contains(t, f.scrape(t), "istio_requests_total{path=\"/a\"} 2\n")

	// A third config changes the labels of requests_total: it wins, its
	// series start afresh, and the older configs' instances of that metric
	// are refused; the other metric keeps being scraped.
	v3 := &config.Params{Metrics: []*config.Params_MetricInfo{metric("requestcount", "requests_total", counterKind, "path", "code")}}
	require.NoError(t, f.handle(t, params(t, v3), mt.Instance("requestcount", mt.Int(5), "path", mt.Str("/a"), "code", mt.Int(200))))
	err := f.handle(t, params(t, v1), mt.Instance("requestcount", mt.Int(1), "path", mt.Str("/b")), mt.Instance("inflight", mt.Int(6)))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, err.Error(), "redefined by a newer handler config")
	require.Equal(t, `# HELP istio_in_flight in_flight
# TYPE istio_in_flight gauge
istio_in_flight 6
# HELP istio_requests_total requests_total
# TYPE istio_requests_total counter
istio_requests_total{code="200",path="/a"} 5
`, f.scrape(t))
	require.Equal(t, 0.0, dropped(f, telemetry.DropSuperseded), "refused up front, not dropped later")
}

func TestSeriesCountIsReportedNextToTheOwnMetrics(t *testing.T) {
	f := newFixture(t, 0)
	cfg := params(t, &config.Params{Metrics: []*config.Params_MetricInfo{metric("a", "hits", counterKind)}})
	require.NoError(t, f.handle(t, cfg, mt.Instance("a", mt.Int(2))))
	require.Contains(t, f.scrape(t), "istio_hits 2\n")
	require.Equal(t, 1.0, testutil.ToFloat64(f.metrics.SinkSeries.WithLabelValues(exposition.Key)))
}

// TestScrapeWhileIngesting runs scrapes, ingestion and redefinitions at once
// for the race detector; every scrape must be valid exposition text.
func TestScrapeWhileIngesting(t *testing.T) {
	f := newFixture(t, 0)
	a := params(t, &config.Params{Metrics: []*config.Params_MetricInfo{metric("a", "hits", counterKind, "l"), metric("d", "lat", distKind, "l")}})
	b := params(t, &config.Params{Metrics: []*config.Params_MetricInfo{metric("a", "hits", counterKind, "l", "m")}})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			cfg := a
			if i%50 == 49 {
				cfg = b
			}
			_ = f.handle(t, cfg, mt.Instance("a", mt.Int(1), "l", mt.Str(fmt.Sprint(i%100))), mt.Instance("d", mt.Double(0.2), "l", mt.Str("x")))
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			writeText(t, f.expo)
		}
	}()
	wg.Wait()
	require.NotEmpty(t, f.scrape(t))
}
