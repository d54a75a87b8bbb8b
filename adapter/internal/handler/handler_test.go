package handler_test

import (
	"context"
	"encoding/binary"
	"math"
	"strconv"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/types"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/dedup"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

type fixture struct {
	sinks   *sinks.Set
	factory *sinktest.Factory
	cache   *handler.Cache
	now     time.Time
}

// newFixture builds a cache with the adapter's default dedup window: reused
// ids are counted, never dropped.
func newFixture(t *testing.T, capacity int) *fixture {
	return newFixtureWith(t, capacity, dedup.Options{Window: time.Minute})
}

func newFixtureWith(t *testing.T, capacity int, d dedup.Options) *fixture {
	f := &fixture{sinks: sinks.NewSet(capacity, 5*time.Second), factory: sinktest.NewFactory(), now: time.Unix(1600000000, 0)}
	f.cache = handler.NewCache(handler.Deps{Sinks: f.sinks, Factories: []sinks.Factory{f.factory}, Dedup: dedup.New(d)},
		handler.CacheOptions{Size: 4, IdleTimeout: time.Minute, Now: func() time.Time { return f.now }})
	t.Cleanup(func() { _ = f.sinks.Close(context.Background()) })
	return f
}

func params(t testing.TB, p *config.Params) *types.Any {
	b, err := p.Marshal()
	require.NoError(t, err)
	return &types.Any{TypeUrl: config.TypeURL, Value: b}
}

var requestCount = &config.Params{Metrics: []*config.Params_MetricInfo{{
	InstanceName: "requestcount.instance.istio-system", Kind: config.Params_MetricInfo_COUNTER,
	Name: "requests_total", LabelNames: []string{"path", "code"},
}, {
	InstanceName: "latency", Kind: config.Params_MetricInfo_DISTRIBUTION, Name: "latency", LabelNames: []string{"path"},
	DurationUnit: config.DurationUnit_MILLISECONDS,
}}}

// handle sends a request through the cache and the handler, as the server does.
func (f *fixture) handle(t *testing.T, cfg *types.Any, dedup string, instances ...*metricpb.InstanceMsg) (handler.Outcome, error) {
	raw, err := (&metricpb.HandleMetricRequest{Instances: instances, AdapterConfig: cfg, DedupId: dedup}).Marshal()
	require.NoError(t, err)
	var req handlemetric.Request
	require.NoError(t, req.Parse(raw))
	h, err := f.cache.Get(req.AdapterConfig)
	if err != nil {
		return handler.Outcome{}, err
	}
	defer h.Done()
	o := h.Handle(&req, f.now)
	return o, o.Err()
}

func (f *fixture) flush(t *testing.T) *sinktest.Sink {
	require.NoError(t, f.sinks.Flush(context.Background()))
	s := f.factory.Sink("test")
	require.NotNil(t, s)
	return s
}

func TestHandleRecordsSeriesFromMixerRequest(t *testing.T) {
	f := newFixture(t, 1000)
	cfg := params(t, requestCount)
	o, err := f.handle(t, cfg, "1",
		mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str("/v1/damage"), "code", mt.Int(200), "extra", mt.Str("dropped")),
		mt.Instance("requestcount.instance.istio-system", mt.Double(2), "path", mt.Str("/v1/damage"), "code", mt.Int(200)),
		mt.Instance("requestcount.instance.istio-system", mt.Int(1), "code", mt.Int(500)),
		mt.Instance("latency.instance.default", mt.Duration(1500*time.Millisecond), "path", mt.Str("/a")),
	)
	require.NoError(t, err)
	require.Equal(t, 4, o.Accepted)

	s := f.flush(t)
	require.Equal(t, map[string]sinktest.Aggregate{
		"istio_requests_total{/v1/damage,200}": {Count: 2, Sum: 3, Min: 1, Max: 2, Last: 2},
		"istio_requests_total{,500}":           {Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1},
		"istio_latency{/a}":                    {Count: 1, Sum: 1500, Min: 1500, Max: 1500, Last: 1500},
	}, s.Series(), "missing labels are empty, extra dimensions dropped, durations in the metric's unit")
}

func TestBadInstancesAreRefusedAndTheRestKept(t *testing.T) {
	f := newFixture(t, 1000)
	cfg := params(t, requestCount)
	o, err := f.handle(t, cfg, "",
		mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str("/ok")),
		mt.Instance("nosuch.instance.istio-system", mt.Int(1)),
		mt.Instance("requestcount.instance.istio-system", mt.Double(math.NaN())),
		mt.Instance("requestcount.instance.istio-system", mt.Double(math.Inf(1))),
		mt.Instance("requestcount.instance.istio-system", mt.Int(-3)),
		mt.Instance("requestcount.instance.istio-system", mt.Str("abc")),
		mt.Instance("requestcount.instance.istio-system", nil),
		mt.Instance("requestcount.instance.istio-system", mt.Str("4"), "path", mt.Str("/ok")),
	)
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Equal(t, 2, o.Accepted)
	for _, want := range []string{"6 of 8 instances refused", `unknown instance`, `"nosuch.instance.istio-system"`,
		"NaN or infinite", "negative increment", "not a number", "no value"} {
		require.Contains(t, err.Error(), want)
	}
	require.Equal(t, 1, o.Rejected[handler.RejectUnknownInstance])
	require.Equal(t, 2, o.Rejected[handler.RejectNonFinite])

	s := f.flush(t)
	require.Equal(t, map[string]sinktest.Aggregate{
		"istio_requests_total{/ok,}": {Count: 2, Sum: 5, Min: 1, Max: 4, Last: 4},
	}, s.Series())
}

func TestMalformedInstanceRefusesWholeRequest(t *testing.T) {
	// With deduplication on, the refused call must not make its fixed
	// re-send (same id) a duplicate.
	f := newFixtureWith(t, 1000, dedup.Options{Window: time.Minute, Deduplicate: true})
	good, err := mt.Instance("requestcount.instance.istio-system", mt.Int(1)).Marshal()
	require.NoError(t, err)
	cfg, err := params(t, requestCount).Marshal()
	require.NoError(t, err)
	// instances: a good one, then one whose value field has a bad wire type.
	raw := append([]byte{0x0a, byte(len(good))}, good...)
	raw = append(raw, 0x0a, 0x02, 0x08, 0x01)
	raw = append(binary.AppendUvarint(append(raw, 0x12), uint64(len(cfg))), cfg...)
	raw = append(raw, 0x1a, 0x01, '9')
	var req handlemetric.Request
	require.NoError(t, req.Parse(raw))
	h, err := f.cache.Get(req.AdapterConfig)
	require.NoError(t, err)
	o := h.Handle(&req, f.now)
	h.Done()
	require.Equal(t, codes.InvalidArgument, status.Code(o.Err()))
	require.Contains(t, o.Err().Error(), "malformed")

	s := f.flush(t)
	require.Empty(t, s.Samples(), "nothing of a corrupt request is recorded")
	// The dedup id of a refused request is forgotten: a fixed resend counts.
	_, err = f.handle(t, params(t, requestCount), "9", mt.Instance("requestcount.instance.istio-system", mt.Int(1)))
	require.NoError(t, err)
	f.flush(t)
	require.Len(t, s.Samples(), 1)
}

func TestReusedDedupIDs(t *testing.T) {
	inst := func(v int64) *metricpb.InstanceMsg {
		return mt.Instance("requestcount.instance.istio-system", mt.Int(v))
	}
	type call struct {
		id    string
		value int64
	}
	tests := []struct {
		name          string
		dedup         dedup.Options
		calls         []call
		wantReused    []bool
		wantDuplicate []bool
		wantSum       float64
	}{{
		// Mixer's race: calls that share an id, with the same or another
		// content, are all counted by default.
		name:          "default counts every call",
		dedup:         dedup.Options{Window: time.Minute},
		calls:         []call{{"12345", 1}, {"12345", 1}, {"12345", 2}, {"12346", 1}},
		wantReused:    []bool{false, true, true, false},
		wantDuplicate: []bool{false, false, false, false},
		wantSum:       5,
	}, {
		// A client that retries with a stable id: an identical re-send
		// counts once, another content under the same id counts.
		name:          "deduplication drops identical re-sends only",
		dedup:         dedup.Options{Window: time.Minute, Deduplicate: true},
		calls:         []call{{"12345", 1}, {"12345", 1}, {"12345", 2}, {"12345", 2}, {"12346", 1}},
		wantReused:    []bool{false, true, true, true, false},
		wantDuplicate: []bool{false, true, false, true, false},
		wantSum:       4,
	}, {
		name:          "calls without an id are never reused",
		dedup:         dedup.Options{Window: time.Minute, Deduplicate: true},
		calls:         []call{{"", 1}, {"", 1}},
		wantReused:    []bool{false, false},
		wantDuplicate: []bool{false, false},
		wantSum:       2,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixtureWith(t, 1000, tc.dedup)
			cfg := params(t, requestCount)
			for i, c := range tc.calls {
				o, err := f.handle(t, cfg, c.id, inst(c.value))
				require.NoError(t, err)
				require.Equal(t, tc.wantReused[i], o.ReusedID, "call %d reused", i)
				require.Equal(t, tc.wantDuplicate[i], o.Duplicate, "call %d duplicate", i)
			}
			require.Equal(t, tc.wantSum, f.flush(t).Series()["istio_requests_total{,}"].Sum)
		})
	}
}

func TestDedupIDsAreScopedByHandlerConfig(t *testing.T) {
	f := newFixtureWith(t, 1000, dedup.Options{Window: time.Minute, Deduplicate: true})
	other := proto.Clone(requestCount).(*config.Params)
	other.Metrics[0].Description = "another config"
	for _, cfg := range []*types.Any{params(t, requestCount), params(t, other)} {
		o, err := f.handle(t, cfg, "7", mt.Instance("requestcount.instance.istio-system", mt.Int(1)))
		require.NoError(t, err)
		require.False(t, o.ReusedID, "each handler config has its own id sequence, as in Mixer")
	}
}

func TestShortInstanceNameMatchesAnyNamespace(t *testing.T) {
	f := newFixture(t, 1000)
	cfg := params(t, &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "hits", Kind: config.Params_MetricInfo_COUNTER, Name: "hits"}}})
	_, err := f.handle(t, cfg, "", mt.Instance("hits.instance.default", mt.Int(1)), mt.Instance("hits.instance.prod", mt.Int(2)), mt.Instance("hits", mt.Int(3)))
	require.NoError(t, err)
	require.Equal(t, 6.0, f.flush(t).Series()["istio_hits{}"].Sum)
}

func TestBadConfigsAreRefusedAndRemembered(t *testing.T) {
	f := newFixture(t, 1000)
	tests := []struct {
		name string
		cfg  *types.Any
		want string
	}{
		{"wrong type url", &types.Any{TypeUrl: "type.googleapis.com/adapter.prometheus.config.Params"}, "type_url"},
		{"garbage bytes", &types.Any{TypeUrl: config.TypeURL, Value: []byte{0xff, 0xff}}, "does not decode"},
		{"invalid field", params(t, &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "a"}}}), "metrics[0].kind"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 2; i++ {
				_, err := f.handle(t, tc.cfg, "", mt.Instance("a", mt.Int(1)))
				require.ErrorIs(t, err, config.ErrInvalid)
				require.ErrorContains(t, err, tc.want)
			}
		})
	}
	require.Equal(t, 3, f.cache.Len(), "failures are cached once each")
}

func TestQueueFullDropsAndSays(t *testing.T) {
	f := newFixture(t, 3)
	f.factory.Setup = func(s *sinktest.Sink) { s.ConsumeDelay = 200 * time.Millisecond }
	cfg := params(t, requestCount)
	many := []*metricpb.InstanceMsg{}
	for i := 0; i < 2; i++ {
		many = append(many, mt.Instance("requestcount.instance.istio-system", mt.Int(1)))
	}
	_, err := f.handle(t, cfg, "", many...)
	require.NoError(t, err)
	o, err := f.handle(t, cfg, "", many...)
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "2 queued + 2 new > capacity 3")
	require.Equal(t, map[string]int{"test": 2}, o.Dropped)
	require.Contains(t, err.Error(), "queue full")
}

func TestConfigChangeKeepsSeriesAndRedefinitionSupersedes(t *testing.T) {
	f := newFixture(t, 1000)
	v1 := params(t, requestCount)
	_, err := f.handle(t, v1, "", mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str("/a")))
	require.NoError(t, err)

	// Same metric definitions, a different limit: a new handler, same series.
	changed := *requestCount
	changed.Limits = &config.Limits{MaxSeriesPerMetric: 99}
	v2 := params(t, &changed)
	_, err = f.handle(t, v2, "", mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str("/a")))
	require.NoError(t, err)
	require.Equal(t, 2.0, f.flush(t).Series()["istio_requests_total{/a,}"].Sum)

	// A third config redefines requests_total: it wins, the older configs'
	// instances of that metric are refused, the other metric is untouched.
	redefined := &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "requestcount.instance.istio-system",
		Kind: config.Params_MetricInfo_COUNTER, Name: "requests_total", LabelNames: []string{"path"}}}}
	v3 := params(t, redefined)
	_, err = f.handle(t, v3, "", mt.Instance("requestcount.instance.istio-system", mt.Int(5), "path", mt.Str("/a")))
	require.NoError(t, err)
	_, err = f.handle(t, v1, "", mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str("/a")), mt.Instance("latency", mt.Duration(time.Second)))
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	require.Contains(t, err.Error(), "redefined by a newer handler config")
	s := f.flush(t)
	require.Equal(t, map[string]sinktest.Aggregate{
		"istio_requests_total{/a}": {Count: 1, Sum: 5, Min: 5, Max: 5, Last: 5},
		"istio_latency{}":          {Count: 1, Sum: 1000, Min: 1000, Max: 1000, Last: 1000},
	}, s.Series())
}

func TestImplicitMetricsForSeedLibratoHandlers(t *testing.T) {
	f := newFixture(t, 1000)
	//nolint:staticcheck // the seed adapter's params, unchanged.
	cfg := params(t, &config.Params{LibratoEmail: "ops@example.com", LibratoToken: "tok-123456"})
	_, err := f.handle(t, cfg, "", mt.Instance("requestsize.instance.istio-system", mt.Int(1235), "destination", mt.Str("svc"), "code", mt.Int(200)))
	require.NoError(t, err)
	require.Equal(t, map[string]sinktest.Aggregate{
		"requestsize{code,200,destination,svc}": {Count: 1, Sum: 1235, Min: 1235, Max: 1235, Last: 1235},
	}, f.flush(t).Series())
}

func TestLabelValuesAreCutAtTheLimit(t *testing.T) {
	f := newFixture(t, 1000)
	p := &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "a", Kind: config.Params_MetricInfo_GAUGE, LabelNames: []string{"l"}}},
		Limits: &config.Limits{MaxLabelValueLength: 5}}
	o, err := f.handle(t, params(t, p), "", mt.Instance("a", mt.Int(1), "l", mt.Str("héllo world")), mt.Instance("a", mt.Int(2), "l", mt.Int(1234567)))
	require.NoError(t, err)
	require.Equal(t, 2, o.Truncated, "every cut value is counted")
	require.Equal(t, []string{"istio_a{12345}", "istio_a{héll}"}, sortedKeys(f.flush(t).Series()),
		"cut at a UTF-8 boundary, text and converted values alike")
}

func sortedKeys(m map[string]sinktest.Aggregate) []string {
	out := []string{}
	for k := range m {
		out = append(out, k)
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestIdleHandlersAreEvictedAndTheirSinksFlushed(t *testing.T) {
	f := newFixture(t, 1000)
	_, err := f.handle(t, params(t, requestCount), "", mt.Instance("requestcount.instance.istio-system", mt.Int(1)))
	require.NoError(t, err)
	s := f.factory.Sink("test")
	f.now = f.now.Add(2 * time.Minute)
	require.Equal(t, 1, f.cache.EvictIdle())
	require.Eventually(t, func() bool { closed, _ := s.Closed(); return closed }, 5*time.Second, 10*time.Millisecond,
		"the last handler of a sink closes (and flushes) it")
	require.Len(t, s.Samples(), 1, "samples queued before eviction are consumed first")
}

func TestCacheIsBounded(t *testing.T) {
	f := newFixture(t, 1000)
	for i := 0; i < 10; i++ {
		p := &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "a", Kind: config.Params_MetricInfo_GAUGE, Name: "m" + strconv.Itoa(i)}}}
		_, err := f.handle(t, params(t, p), "", mt.Instance("a", mt.Int(1)))
		require.NoError(t, err)
		f.now = f.now.Add(time.Second)
	}
	require.Equal(t, 4, f.cache.Len())
}

// TestEvictedHandlersAreClosedAndReported: the least recently used handler
// of a full cache is closed once its requests are done, and OnClose says so
// (meshmetrics_handlers_closed_total).
func TestEvictedHandlersAreClosedAndReported(t *testing.T) {
	set := sinks.NewSet(1000, time.Second)
	defer set.Close(context.Background())
	closed := make(chan handler.Digest, 10)
	now := time.Unix(1600000000, 0)
	cache := handler.NewCache(handler.Deps{Sinks: set, Factories: []sinks.Factory{sinktest.NewFactory()},
		OnClose: func(d handler.Digest) { closed <- d }},
		handler.CacheOptions{Size: 2, IdleTimeout: time.Hour, Now: func() time.Time { return now }})
	var digests []handler.Digest
	for i := 0; i < 3; i++ {
		p := &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "a", Kind: config.Params_MetricInfo_GAUGE, Name: "m" + strconv.Itoa(i)}}}
		raw, err := (&metricpb.HandleMetricRequest{AdapterConfig: params(t, p)}).Marshal()
		require.NoError(t, err)
		var req handlemetric.Request
		require.NoError(t, req.Parse(raw))
		h, err := cache.Get(req.AdapterConfig)
		require.NoError(t, err)
		digests = append(digests, h.Digest)
		h.Done()
		now = now.Add(time.Second)
	}
	select {
	case d := <-closed:
		require.Equal(t, digests[0], d, "the least recently used handler is the one closed")
	case <-time.After(5 * time.Second):
		t.Fatal("the evicted handler was not closed")
	}
	require.Empty(t, closed, "only one handler was evicted")
}

// TestImplicitMetricLookupAllocatesNothing: a seed librato config (no
// metrics list) finds the implicit metric of each instance without
// allocating per instance.
func TestImplicitMetricLookupAllocatesNothing(t *testing.T) {
	// The discarding sink of the benchmarks: only the handler's own
	// allocations are counted, not a test sink's records.
	set := sinks.NewSet(1<<20, time.Second)
	defer set.Close(context.Background())
	cache := handler.NewCache(handler.Deps{Sinks: set, Factories: []sinks.Factory{discardFactory{}}, Dedup: dedup.New(dedup.Options{Window: time.Minute})},
		handler.CacheOptions{Size: 4, IdleTimeout: time.Hour})
	//nolint:staticcheck // the seed adapter's params.
	req := &metricpb.HandleMetricRequest{AdapterConfig: params(t, &config.Params{LibratoEmail: "e@example.com", LibratoToken: "tok-123456"})}
	for i := 0; i < 50; i++ {
		req.Instances = append(req.Instances, mt.Instance("requestsize.instance.default", mt.Int(1), "l", mt.Str("x")))
	}
	raw, err := req.Marshal()
	require.NoError(t, err)
	var r handlemetric.Request
	allocs := testing.AllocsPerRun(200, func() {
		require.NoError(t, r.Parse(raw))
		h, err := cache.Get(r.AdapterConfig)
		require.NoError(t, err)
		o := h.Handle(&r, time.Unix(1600000000, 0))
		h.Done()
		require.Equal(t, 50, o.Accepted)
	})
	// What remains is per request (pooled batches refilled after a GC),
	// never per instance.
	require.Less(t, allocs, 50.0, "allocations per request of 50 instances")
}
