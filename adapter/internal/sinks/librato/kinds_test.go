package librato_test

import (
	"context"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato/libratotest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

func f64(v float64) *float64 { return &v }
func i64(v int64) *int64     { return &v }

// TestTaggedKindsAndTime checks how each kind appears on the tagged API and
// the measurement time: a sink's first period is stamped from the sink's
// start (an earlier sink of the destination, a previous run, may have sent
// values for the period's start), the next ones with their start.
func TestTaggedKindsAndTime(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	l := h.librato(func(l *config.LibratoParams) {
		l.Period = time.Minute
		l.Tags = map[string]string{"Cluster": "prod"}
		l.ReplicaTag = "replica"
	})
	anyCfg := h.params(l, requestsMetric, latencyMetric, inflightMetric)
	h.advance(25 * time.Second) // mid-period: the sink starts now
	h.handle(anyCfg,
		mt.Instance("requestcount.instance.istio-system", mt.Int(2), "path", mt.Str("/a"), "code", mt.Int(200)),
		mt.Instance("requestcount.instance.istio-system", mt.Int(3), "path", mt.Str("/a"), "code", mt.Int(200)),
		mt.Instance("latency.instance.istio-system", mt.Duration(250*time.Millisecond), "path", mt.Str("/a")),
		mt.Instance("latency.instance.istio-system", mt.Duration(1500*time.Millisecond), "path", mt.Str("/a")),
		mt.Instance("latency.instance.istio-system", mt.Duration(500*time.Millisecond), "path", mt.Str("/a")),
		mt.Instance("inflight.instance.istio-system", mt.Int(7), "path", mt.Str("/a")),
		mt.Instance("inflight.instance.istio-system", mt.Int(4), "path", mt.Str("/a")),
	)
	h.waitConsumed()
	h.advance(time.Minute) // the tick closes the period
	require.Eventually(t, func() bool { return len(h.srv.Measurements()) == 3 }, 10*time.Second, time.Millisecond)

	tags := map[string]string{"cluster": "prod", "replica": "replica-0", "path": "/a"}
	byName := map[string]libratotest.Point{}
	for _, p := range h.srv.Measurements() {
		require.Equal(t, start.Unix()+25, p.Time, "the first period: from the sink's start")
		require.Equal(t, int64(60), p.Period)
		byName[p.Name] = p
	}
	want := map[string]librato.Measurement{
		"istio.requests": {Name: "istio.requests", Value: f64(5),
			Tags: map[string]string{"cluster": "prod", "replica": "replica-0", "path": "/a", "code": "200"}},
		"istio.latency": {Name: "istio.latency", Tags: tags,
			Count: i64(3), Sum: f64(2250), Min: f64(250), Max: f64(1500), Last: f64(500)},
		"istio.inflight": {Name: "istio.inflight", Tags: tags, Value: f64(4)},
	}
	for name, w := range want {
		got := byName[name].Measurement
		got.Time, got.Period = 0, 0
		require.Equal(t, w, got, name)
	}
	h.handle(anyCfg, mt.Instance("inflight.instance.istio-system", mt.Int(1), "path", mt.Str("/a")))
	h.waitConsumed()
	h.advance(time.Minute)
	require.Eventually(t, func() bool { return len(h.srv.Measurements()) == 4 }, 10*time.Second, time.Millisecond)
	require.Equal(t, start.Unix()+60, h.srv.Measurements()[3].Time, "the next periods: their start")
}

// TestASinkRebuiltWithinAPeriodSendsAfterTheClosedOne: a config change
// closes the sink of a destination (it sends its open period) and builds a
// new one within the same period: the new sink's values come after the
// closed one's, none replaces another.
func TestASinkRebuiltWithinAPeriodSendsAfterTheClosedOne(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	l := h.librato(func(l *config.LibratoParams) { l.Period = time.Minute })
	first := h.params(l, requestsMetric)
	h.handle(first, mt.Instance("requestcount.instance.istio-system", mt.Int(2), "path", mt.Str("/a"), "code", mt.Int(200)))
	h.waitConsumed()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.set.Close(ctx)) // every sink closes, as when its last handler goes
	h.set = sinks.NewSet(1<<20, 10*time.Second)
	h.cache = handler.NewCache(handler.Deps{Sinks: h.set, Factories: []sinks.Factory{h.factory}},
		handler.CacheOptions{Size: 8, IdleTimeout: time.Hour, Now: h.clock.Now})
	h.handle(first, mt.Instance("requestcount.instance.istio-system", mt.Int(5), "path", mt.Str("/a"), "code", mt.Int(200)))
	h.flush()
	require.Equal(t, 7.0, h.srv.Total("istio.requests"))
	require.Zero(t, h.srv.Stats().Conflicts)
	require.Zero(t, h.srv.Stats().Overwritten)
}

// TestALateBatchClosesThePeriodOffConsume: with no tick to close it, a
// batch received after the period's end sets the period aside in Consume,
// and the sink's own goroutine encodes and sends it; the late batch belongs
// to the next period.
func TestALateBatchClosesThePeriodOffConsume(t *testing.T) {
	h := newHarness(t, harnessConfig{tick: time.Hour})
	anyCfg := h.params(h.librato(), requestsMetric)
	h.handle(anyCfg, mt.Instance("requestcount.instance.istio-system", mt.Int(2), "path", mt.Str("/a"), "code", mt.Int(200)))
	h.waitConsumed()
	require.Never(t, func() bool { return len(h.srv.Measurements()) > 0 }, 50*time.Millisecond, time.Millisecond, "no tick, no close")
	h.advance(time.Second)
	h.handle(anyCfg, mt.Instance("requestcount.instance.istio-system", mt.Int(5), "path", mt.Str("/a"), "code", mt.Int(200)))
	require.Eventually(t, func() bool { return len(h.srv.Measurements()) == 1 }, 10*time.Second, time.Millisecond)
	got := h.srv.Measurements()[0]
	require.Equal(t, start.Unix(), got.Time)
	require.Equal(t, f64(2), got.Value, "the late batch is the next period's")
}

func TestPartialFlushesNeverReuseATime(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	anyCfg := h.params(h.librato(func(l *config.LibratoParams) { l.Period = time.Minute }), requestsMetric)
	for i := 0; i < 3; i++ {
		h.handle(anyCfg, mt.Instance("requestcount.instance.istio-system", mt.Int(1)))
		h.flush() // all within the first second of the period
	}
	h.flush() // nothing to send: the next time is not moved on
	h.advance(10 * time.Second)
	h.handle(anyCfg, mt.Instance("requestcount.instance.istio-system", mt.Int(1)))
	h.flush()
	var times []int64
	for _, p := range h.srv.Measurements() {
		times = append(times, p.Time-start.Unix())
	}
	require.Equal(t, []int64{0, 1, 2, 3}, times, "later parts of a flushed period get later, distinct times")
	require.Equal(t, 4.0, h.srv.Total("istio.requests"))
}

// TestPartialFlushesOfOneSecondNeverCollide: with a 1 s period, a Flush and
// the Close in the same second, and a second Flush after the period's
// single second was used, would stamp a series twice with one time; the
// fake keeps one value per series and time, as Librato does, so a collision
// would lose a value. Each value gets its own time instead, and the fake
// saw no conflicting overwrite.
func TestPartialFlushesOfOneSecondNeverCollide(t *testing.T) {
	for _, api := range []config.LibratoParams_Api{config.LibratoParams_TAGGED, config.LibratoParams_LEGACY} {
		t.Run(api.String(), func(t *testing.T) {
			h := newHarness(t, harnessConfig{tick: time.Hour})
			anyCfg := h.params(h.librato(func(l *config.LibratoParams) { l.Api = api }), requestsMetric, inflightMetric)
			ins := func(n int64) []*metricpb.InstanceMsg {
				return []*metricpb.InstanceMsg{
					mt.Instance("requestcount.instance.istio-system", mt.Int(n), "path", mt.Str("/a"), "code", mt.Int(200)),
					mt.Instance("inflight.instance.istio-system", mt.Int(n), "path", mt.Str("/a")),
				}
			}
			h.handle(anyCfg, ins(1)...)
			h.flush()
			h.handle(anyCfg, ins(10)...)
			h.flush() // the period's only second is used: a later time
			h.handle(anyCfg, ins(100)...)
			h.waitConsumed()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, h.set.Close(ctx)) // in the same second again
			h.advance(time.Second)

			st := h.srv.Stats()
			require.Zero(t, st.Conflicts, "no value of a series replaced another")
			if api == config.LibratoParams_TAGGED {
				require.Equal(t, 111.0, h.srv.Total("istio.requests"), "every instance, in three values")
				var times []int64
				for _, p := range h.srv.Measurements() {
					if p.Name == "istio.requests" {
						times = append(times, p.Time-start.Unix())
					}
				}
				require.Equal(t, []int64{0, 1, 2}, times)
				var last float64
				for _, p := range h.srv.Measurements() {
					if p.Name == "istio.inflight" {
						last = *p.Value
					}
				}
				require.Equal(t, 100.0, last)
				return
			}
			last, ok := h.srv.LegacyCounterLast("istio.requests", "replica-0:code.200:path._a")
			require.True(t, ok)
			require.Equal(t, 111.0, last, "the running total")
			var times []int64
			for _, p := range h.srv.LegacyPoints() {
				if p.Name == "istio.requests" {
					times = append(times, p.MeasureTime-start.Unix())
				}
			}
			require.Equal(t, []int64{0, 1, 2}, times)
		})
	}
}

func TestLegacyAPI(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	l := h.librato(func(l *config.LibratoParams) { l.Api = config.LibratoParams_LEGACY })
	anyCfg := h.params(l, requestsMetric, latencyMetric, inflightMetric)
	var total float64
	for p := 0; p < 3; p++ {
		for i := 0; i < 4; i++ {
			n := int64(p*4 + i + 1)
			total += float64(n)
			h.handle(anyCfg,
				mt.Instance("requestcount.instance.istio-system", mt.Int(n), "path", mt.Str("/A b"), "code", mt.Int(200)),
				mt.Instance("latency.instance.istio-system", mt.Duration(time.Duration(n)*250*time.Millisecond), "path", mt.Str("/A b")),
				mt.Instance("inflight.instance.istio-system", mt.Int(n)))
		}
		h.waitConsumed()
		h.advance(time.Second)
	}
	h.flush()

	last, ok := h.srv.LegacyCounterLast("istio.requests", "replica-0:code.200:path._a_b")
	require.True(t, ok, "the series' tags become its source, after the replica: %+v", h.srv.LegacyPoints())
	require.Equal(t, total, last, "legacy counters are cumulative: the last value is the total")
	var counterValues []float64
	for _, p := range h.srv.LegacyPoints() {
		require.NotEqual(t, librato.ReservedSource, p.Source)
		switch p.Name {
		case "istio.requests":
			require.Equal(t, libratotest.Counter, p.Kind)
			counterValues = append(counterValues, *p.Value)
		case "istio.latency":
			require.Equal(t, libratotest.Gauge, p.Kind)
			require.Equal(t, "replica-0:path._a_b", p.Source)
			require.Equal(t, int64(4), *p.Count)
			require.NotNil(t, p.SumSquares, "legacy summaries carry sum_squares (no last)")
		case "istio.inflight":
			require.Equal(t, "replica-0", p.Source, "no tags: the top-level source")
			require.Nil(t, p.Count)
		}
	}
	require.Equal(t, []float64{10, 36, 78}, counterValues, "running totals per period")
	require.Equal(t, total*250, h.srv.LegacyGaugeTotal("istio.latency"))
	require.Equal(t, 4.0+8+12, h.srv.LegacyGaugeTotal("istio.inflight"), "gauges: each period's last value")
}

func TestSeedAdapterHandlerWorksUnchanged(t *testing.T) {
	h := newHarness(t, harnessConfig{server: []libratotest.Option{libratotest.WithCredentials("ops@example.com", "seed-token-123")}})
	// The seed adapter's params, as Mixer encodes them for its CR: no url,
	// no metrics list, the deprecated fields only.
	//nolint:staticcheck // the seed adapter's fields, on purpose.
	seed := marshal(t, config.LegacyLibratoTypeURL, &config.Params{LibratoEmail: "ops@example.com", LibratoToken: "seed-token-123"})
	h.handle(seed,
		mt.Instance("requestsize.instance.istio-system", mt.Int(1235), "destination_service", mt.Str("Reviews.default"), "response_code", mt.Int(200)),
		mt.Instance("requestsize.instance.istio-system", mt.Int(765), "destination_service", mt.Str("Reviews.default"), "response_code", mt.Int(200)),
		mt.Instance("requestsize.instance.istio-system", mt.Int(99), "destination_service", mt.Str("ratings"), "response_code", mt.Int(500), "source", mt.Str("")),
	)
	h.flush()

	last, ok := h.srv.LastRequest()
	require.True(t, ok)
	require.Equal(t, librato.MeasurementsPath, last.Path)
	require.Equal(t, libratotest.AuthAppOptics, last.Auth, "the seed sent the token as the Basic user, with no password")
	require.Equal(t, "api.appoptics.com", *h.intended.Load(), "where the seed posted")
	series := h.srv.Series("requestsize", map[string]string{"destination_service": "reviews.default", "response_code": "200"})
	require.Len(t, series, 1, "named after the instance, every dimension a tag: %+v", h.srv.Measurements())
	require.Equal(t, int64(2), *series[0].Count)
	require.Equal(t, 2000.0, *series[0].Sum)
	require.Equal(t, 99.0, h.srv.SumOfValues("requestsize", map[string]string{"destination_service": "ratings", "response_code": "500"}),
		"an empty dimension is left out")
	require.Equal(t, 1.0, h.sanitized(librato.SanitizedTagEmpty))
}
