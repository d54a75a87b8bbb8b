package librato_test

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gogo/protobuf/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/dedup"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato/libratotest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// start is a period boundary for every period a test uses (a multiple of 60 s).
var start = time.Unix(1600000020, 0).Truncate(time.Minute)

// logBuffer collects log output; deliberately not redacting, so that a test
// sees anything the sink tries to log.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// redirect sends every request to the fake server, whatever the URL: a
// handler written for the seed adapter has no url and goes to Librato's.
type redirect struct {
	target *url.URL
	rt     http.RoundTripper
	// host records the host the sink meant to reach.
	host *atomic.Pointer[string]
}

func (r redirect) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	r.host.Store(&host)
	req = req.Clone(req.Context())
	req.URL.Scheme, req.URL.Host, req.Host = r.target.Scheme, r.target.Host, ""
	return r.rt.RoundTrip(req)
}

// harness drives Mixer requests in-process through handler.Cache and
// sinks.Set into a Librato sink and out to a fake Librato.
type harness struct {
	t       testing.TB
	clock   *sinktest.Clock
	srv     *libratotest.Server
	logs    *logBuffer
	env     sinks.Env
	reg     *prometheus.Registry
	factory *librato.Factory
	set     *sinks.Set
	cache   *handler.Cache
	// intended is the host of the latest request before redirection.
	intended atomic.Pointer[string]
}

type harnessConfig struct {
	server  []libratotest.Option
	options librato.Options
	// tick replaces the sinks' 2 ms tick.
	tick time.Duration
}

func newHarness(t testing.TB, hc harnessConfig) *harness {
	t.Helper()
	h := &harness{t: t, clock: sinktest.NewClock(start), logs: &logBuffer{}, reg: prometheus.NewRegistry()}
	h.srv = libratotest.New(append([]libratotest.Option{libratotest.WithRecentRequests(1000)}, hc.server...)...)
	t.Cleanup(h.srv.Close)
	log := logrus.New()
	log.SetOutput(h.logs)
	log.SetFormatter(&logrus.TextFormatter{DisableColors: true})
	h.set = sinks.NewSet(1<<20, 10*time.Second)
	h.env = sinks.Env{
		Log:       log,
		Limiter:   logging.NewLimiter(log, time.Hour),
		Secrets:   &logging.Secrets{},
		Metrics:   telemetry.New(h.reg, func() int { return 0 }, h.set),
		Replica:   "replica-0",
		MaxSeries: 100000,
		Now:       h.clock.Now,
		Tick:      2 * time.Millisecond,
	}
	if hc.tick > 0 {
		h.env.Tick = hc.tick
	}
	target, err := url.Parse(h.srv.URL())
	require.NoError(t, err)
	o := hc.options
	if o.MinBackoff == 0 {
		o.MinBackoff, o.MaxBackoff = time.Millisecond, 20*time.Millisecond
	}
	if o.Transport == nil {
		o.Transport = redirect{target: target, rt: http.DefaultTransport.(*http.Transport).Clone(), host: &h.intended}
	}
	h.factory = librato.NewFactoryWith(h.env, o)
	h.cache = handler.NewCache(handler.Deps{Sinks: h.set, Factories: []sinks.Factory{h.factory}, Dedup: dedup.New(dedup.Options{Window: time.Minute})},
		handler.CacheOptions{Size: 8, IdleTimeout: time.Hour, Now: h.clock.Now})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = h.set.Close(ctx)
	})
	return h
}

// librato is a librato block pointing at the fake, with a 1 s period.
func (h *harness) librato(mut ...func(*config.LibratoParams)) *config.LibratoParams {
	l := &config.LibratoParams{
		Url:             h.srv.URL(),
		Email:           libratotest.DefaultEmail,
		Token:           libratotest.DefaultToken,
		Period:          time.Second,
		MaxRetryElapsed: 30 * time.Second,
		RequestTimeout:  5 * time.Second,
	}
	for _, m := range mut {
		m(l)
	}
	return l
}

func marshal(t testing.TB, typeURL string, p *config.Params) *types.Any {
	t.Helper()
	b, err := p.Marshal()
	require.NoError(t, err)
	return &types.Any{TypeUrl: typeURL, Value: b}
}

// params is a handler config with l and metrics.
func (h *harness) params(l *config.LibratoParams, metrics ...*config.Params_MetricInfo) *types.Any {
	return marshal(h.t, config.TypeURL, &config.Params{Librato: l, Metrics: metrics})
}

// handle sends one HandleMetric request, as the gRPC server does.
func (h *harness) handle(cfg *types.Any, instances ...*metricpb.InstanceMsg) handler.Outcome {
	h.t.Helper()
	raw, err := (&metricpb.HandleMetricRequest{Instances: instances, AdapterConfig: cfg}).Marshal()
	require.NoError(h.t, err)
	var req handlemetric.Request
	require.NoError(h.t, req.Parse(raw))
	hd, err := h.cache.Get(req.AdapterConfig)
	require.NoError(h.t, err)
	defer hd.Done()
	o := hd.Handle(&req, h.clock.Now())
	require.NoError(h.t, o.Err())
	return o
}

// flush sends the open periods and waits until the send queue is empty.
func (h *harness) flush() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(h.t, h.set.Flush(ctx))
}

// waitConsumed waits until the sink has consumed every queued batch, so that
// moving the clock next cannot make a period close before its samples are in.
func (h *harness) waitConsumed() {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		for _, q := range h.set.Stats() {
			if q.Depth > 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, 100*time.Microsecond)
}

// advance moves the fake clock; the sink's next tick closes the periods
// that ended.
func (h *harness) advance(d time.Duration) { h.clock.Advance(d) }

// countLines counts the occurrences of sub in log output.
func countLines(logs, sub string) int { return strings.Count(logs, sub) }

// counter sums a counter vector's series whose labels include want.
func (h *harness) counter(name string, want map[string]string) float64 {
	h.t.Helper()
	families, err := h.reg.Gather()
	require.NoError(h.t, err)
	var total float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue metrics
				}
			}
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

func (h *harness) dropped(reason string) float64 {
	return h.counter("meshmetrics_instances_dropped_total", map[string]string{"reason": reason})
}

func (h *harness) droppedTotal() float64 {
	return h.counter("meshmetrics_instances_dropped_total", nil)
}

func (h *harness) sends(result string) float64 {
	return h.counter("meshmetrics_sink_requests_total", map[string]string{"result": result})
}

func (h *harness) sanitized(reason string) float64 {
	return h.counter("meshmetrics_librato_sanitized_total", map[string]string{"reason": reason})
}

// Metrics of the reconciliation tests.
var (
	requestsMetric = &config.Params_MetricInfo{InstanceName: "requestcount.instance.istio-system",
		Kind: config.Params_MetricInfo_COUNTER, Name: "requests", LabelNames: []string{"path", "code"}}
	latencyMetric = &config.Params_MetricInfo{InstanceName: "latency.instance.istio-system",
		Kind: config.Params_MetricInfo_DISTRIBUTION, Name: "latency", LabelNames: []string{"path"}}
	inflightMetric = &config.Params_MetricInfo{InstanceName: "inflight.instance.istio-system",
		Kind: config.Params_MetricInfo_GAUGE, Name: "inflight", LabelNames: []string{"path"}}
)
