package librato_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato/libratotest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

func TestNamesAndTagsAreSanitisedEndToEnd(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	odd := &config.Params_MetricInfo{InstanceName: "odd", Kind: config.Params_MetricInfo_COUNTER,
		Name: "Req Größe", LabelNames: []string{"Method", "path", "user agent"}}
	anyCfg := h.params(h.librato(), odd)
	h.handle(anyCfg,
		mt.Instance("odd", mt.Int(1), "Method", mt.Str("GET"), "path", mt.Str("/v1/ä?x"), "user agent", mt.Str("curl/8 (x86)")),
		mt.Instance("odd", mt.Int(2), "Method", mt.Str("get"), "path", mt.Str("/v1/ö?x"), "user agent", mt.Str("curl/8 (x86)")),
		mt.Instance("odd", mt.Int(4), "Method", mt.Str(strings.Repeat("p", 300))),
	)
	h.flush()

	require.Zero(t, h.srv.StatusCount(400), "nothing the API would refuse was sent")
	require.Equal(t, 7.0, h.srv.Total("istio.Req_Gr__e"), "name: one _ per invalid character")
	merged := h.srv.Series("istio.Req_Gr__e", map[string]string{"method": "get", "path": "/v1/_?x", "user_agent": "curl/8 _x86_"})
	require.Len(t, merged, 1, "GET and get, ä and ö: one Librato series, merged instead of overwriting: %+v", h.srv.Measurements())
	require.Equal(t, 3.0, *merged[0].Value)
	long := h.srv.Series("istio.Req_Gr__e", map[string]string{"method": strings.Repeat("p", librato.MaxTagValueLen)})
	require.Len(t, long, 1, "values cut to 255, empty ones left out")

	for reason, want := range map[string]float64{
		librato.SanitizedNameReplaced: 1, // one metric definition
		librato.SanitizedTagReplaced:  2, // two series had replaced characters
		librato.SanitizedTagTruncated: 1,
		librato.SanitizedTagEmpty:     1,
	} {
		require.Equal(t, want, h.sanitized(reason), reason)
	}
}

func TestMoreThanFiftyTags(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	l := h.librato(func(l *config.LibratoParams) {
		l.Tags = map[string]string{"cluster": "prod", "d07": "constant wins"}
		l.ReplicaTag = "replica"
	})
	var dims []any
	for i := 0; i < 60; i++ {
		dims = append(dims, fmt.Sprintf("d%02d", i), mt.Int(int64(i)))
	}
	// No metrics list: an implicit metric, every dimension a tag.
	h.handle(h.params(l), mt.Instance("wide.instance.default", mt.Int(9), dims...))
	h.flush()

	points := h.srv.Measurements()
	require.Len(t, points, 1)
	tags := points[0].Tags
	require.Len(t, tags, librato.MaxTagsPerMeasurement)
	require.Equal(t, "prod", tags["cluster"])
	require.Equal(t, "replica-0", tags["replica"])
	require.Equal(t, "constant wins", tags["d07"])
	require.Equal(t, "47", tags["d47"], "the first names in byte order fill the remaining 47")
	require.NotContains(t, tags, "d48")
	require.Equal(t, 1.0, h.sanitized(librato.SanitizedTagOverLimit))
	require.Equal(t, 1.0, h.sanitized(librato.SanitizedTagDuplicate))
}

func TestFallbackTagWhenThereIsNoOther(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.handle(h.params(h.librato(), requestsMetric), mt.Instance("requestcount.instance.istio-system", mt.Int(1)))
	h.flush()
	points := h.srv.Measurements()
	require.Len(t, points, 1)
	require.Equal(t, map[string]string{librato.FallbackTagName: librato.FallbackTagValue}, points[0].Tags,
		"AppOptics needs at least one tag; empty label values are left out")
}

// requestSizes groups the accepted measurements by request, in order.
func requestSizes(h *harness) []int {
	var sizes []int
	var last uint64
	for _, p := range h.srv.Measurements() {
		if p.Request != last {
			sizes = append(sizes, 0)
			last = p.Request
		}
		sizes[len(sizes)-1]++
	}
	return sizes
}

func TestRequestsAreSplit(t *testing.T) {
	tests := []struct {
		name   string
		mut    func(l *config.LibratoParams)
		series int
		want   []int // measurements per request; nil: check the byte cap
	}{
		{name: "tagged at 1000", series: 2500, want: []int{1000, 1000, 500}},
		{name: "tagged at a lower max_measurements_per_request", series: 25,
			mut: func(l *config.LibratoParams) { l.MaxMeasurementsPerRequest = 10 }, want: []int{10, 10, 5}},
		{name: "tagged by bytes", series: 200, mut: func(l *config.LibratoParams) { l.MaxRequestBytes = 2048 }},
		{name: "legacy at 300", series: 700,
			mut: func(l *config.LibratoParams) { l.Api = config.LibratoParams_LEGACY }, want: []int{300, 300, 100}},
		{name: "legacy by bytes", series: 200,
			mut: func(l *config.LibratoParams) { l.Api, l.MaxRequestBytes = config.LibratoParams_LEGACY, 2048 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessConfig{server: []libratotest.Option{libratotest.WithMaxBodyBytes(1 << 30)}})
			l := h.librato()
			if tc.mut != nil {
				tc.mut(l)
			}
			anyCfg := h.params(l, requestsMetric, latencyMetric)
			var ins []*metricpb.InstanceMsg
			for i := 0; i < tc.series; i++ {
				// Half counters, half summaries, so legacy requests carry both lists.
				name, v := "requestcount.instance.istio-system", mt.Int(1)
				if i%2 == 1 {
					name, v = "latency.instance.istio-system", mt.Duration(time.Second)
				}
				ins = append(ins, mt.Instance(name, v, "path", mt.Str(fmt.Sprintf("/some/longer/path/%04d", i))))
			}
			h.handle(anyCfg, ins...)
			h.flush()

			legacy := l.Api == config.LibratoParams_LEGACY
			var sizes []int
			if legacy {
				sizes = legacySizes(h)
			} else {
				sizes = requestSizes(h)
			}
			total := 0
			for _, n := range sizes {
				total += n
			}
			require.Equal(t, tc.series, total, "every series sent once")
			if tc.want != nil {
				// Tagged requests go out two at a time: arrival order varies.
				slices.Sort(sizes)
				slices.Sort(tc.want)
				require.Equal(t, tc.want, sizes)
				return
			}
			require.Greater(t, len(sizes), 5, "the byte cap split the requests")
			for _, r := range h.srv.Requests() {
				require.LessOrEqual(t, len(r.Body), 2048)
				require.Equal(t, libratotest.OutcomeAccepted, r.Outcome)
			}
		})
	}
}

func legacySizes(h *harness) []int {
	by := map[uint64]int{}
	var order []uint64
	for _, p := range h.srv.LegacyPoints() {
		if _, ok := by[p.Request]; !ok {
			order = append(order, p.Request)
		}
		by[p.Request]++
	}
	slices.Sort(order)
	sizes := make([]int, len(order))
	for i, r := range order {
		sizes[i] = by[r]
	}
	return sizes
}

func TestGzipBodies(t *testing.T) {
	h := newHarness(t, harnessConfig{options: librato.Options{Gzip: true}})
	h.handle(h.params(h.librato(), requestsMetric), mt.Instance("requestcount.instance.istio-system", mt.Int(3), "path", mt.Str("/a")))
	h.flush()
	last, ok := h.srv.LastRequest()
	require.True(t, ok)
	require.Equal(t, "gzip", last.Header.Get("Content-Encoding"))
	require.Equal(t, []byte{0x1f, 0x8b}, last.RawBody[:2])
	require.Equal(t, 3.0, h.srv.Total("istio.requests"))
}

func TestEvictedHandlersDeliverTheirOpenPeriod(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.handle(h.params(h.librato(func(l *config.LibratoParams) { l.Period = time.Minute }), requestsMetric),
		mt.Instance("requestcount.instance.istio-system", mt.Int(6)))
	h.advance(2 * time.Hour) // past the idle timeout, and the period
	require.Equal(t, 1, h.cache.EvictIdle())
	require.Eventually(t, func() bool { return h.srv.Total("istio.requests") == 6 }, 10*time.Second, time.Millisecond,
		"the last handler's release closes the sink, which sends what it holds")
}

func TestOneRequestPerPeriodAtThousandSeries(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	anyCfg := h.params(h.librato(func(l *config.LibratoParams) { l.Period = time.Minute }), requestsMetric)
	const series, instances = 1000, 100000
	batch := make([]*metricpb.InstanceMsg, 0, 1000)
	for i := 0; i < instances; i++ {
		batch = append(batch, mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str(fmt.Sprint("/", i%series))))
		if len(batch) == cap(batch) {
			h.handle(anyCfg, batch...)
			batch = batch[:0]
		}
	}
	h.waitConsumed()
	h.advance(time.Minute)
	require.Eventually(t, func() bool { return h.srv.Total("istio.requests") == instances }, 10*time.Second, time.Millisecond)
	require.Equal(t, 1, h.srv.Stats().Requests, "100k instances over 1k series in one period: one HTTP request")
	require.Equal(t, series, len(h.srv.Measurements()))
}

func TestRedefinedMetricStillSendsWhatTheOldDefinitionGathered(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	l := h.librato()
	v1 := h.params(l, requestsMetric)
	h.handle(v1, mt.Instance("requestcount.instance.istio-system", mt.Int(5), "path", mt.Str("/old")))
	// Consumed before the redefinition; one still queued then would be
	// refused by the registry and counted as superseded_definition.
	h.waitConsumed()
	redefined := &config.Params_MetricInfo{InstanceName: "requestcount.instance.istio-system",
		Kind: config.Params_MetricInfo_GAUGE, Name: "requests", LabelNames: []string{"code"}}
	h.handle(h.params(l, redefined), mt.Instance("requestcount.instance.istio-system", mt.Int(7), "code", mt.Int(200)))
	h.flush()
	require.Equal(t, 5.0, h.srv.SumOfValues("istio.requests", map[string]string{"path": "/old"}),
		"accepted before the redefinition: still delivered")
	require.Equal(t, 7.0, h.srv.SumOfValues("istio.requests", map[string]string{"code": "200"}))
	require.Zero(t, h.droppedTotal())
}
