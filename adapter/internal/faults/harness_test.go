package faults_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/gogo/protobuf/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato/libratotest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp/otlptest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/rwtest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/config"
)

// kind is the backend a scenario runs against.
type kind string

const (
	libratoKind kind = "librato"
	rwKind      kind = "remote_write"
	// OTLP with delta temporality, so that what the receiver holds counts
	// instances exactly: over gRPC, and (the fault scenarios) over HTTP.
	otlpKind     kind = "otlp_grpc"
	otlpHTTPKind kind = "otlp_http"
)

var kinds = []kind{libratoKind, rwKind, otlpKind}

func (k kind) isOTLP() bool { return k == otlpKind || k == otlpHTTPKind }

// The metric every scenario sends: a COUNTER whose instances each add one,
// so that what a backend holds counts instances. Librato receives the
// per-period sums, remote write the cumulative value of each series.
const (
	instanceName = "requestcount.instance.istio-system"
	libratoName  = "istio.requests"
	rwName       = "istio_requests"
	otlpName     = "istio.requests"
)

var requestsMetric = &config.Params_MetricInfo{InstanceName: instanceName, Kind: config.Params_MetricInfo_COUNTER,
	Name: "requests", LabelNames: []string{"path"}}

// setup configures a harness.
type setup struct {
	kind       kind
	maxElapsed time.Duration // of one request's retries (default 10s)
	timeout    time.Duration // of one attempt (default 2s)
	spoolDir   string
	shutdown   time.Duration // --shutdown-timeout (default 10s)
	lib        []libratotest.Option
	rw         []rwtest.Option
	// libSrv, rwSrv or otlpSrv reuse a fake (a second run of the adapter
	// against the same destination).
	libSrv  *libratotest.Server
	rwSrv   *rwtest.Server
	otlpSrv *otlptest.Server
	// edit changes the handler params (secrets, tags, external labels).
	edit  func(p *config.Params)
	tweak func(o *adapter.Options)
	// log: where the adapter's logs go (default a buffer).
	log *logrus.Logger
}

// harness is an adapter serving gRPC with push sinks pointed at a fake.
type harness struct {
	t    *testing.T
	s    setup
	lib  *libratotest.Server
	rw   *rwtest.Server
	otlp *otlptest.Server
	a    *adapter.Adapter
	conn *grpc.ClientConn
	logs *syncBuffer
	ids  atomic.Int64
	// ok and refused count the instances of calls answered OK and not.
	ok, refused atomic.Int64
	// pushes counts the flushes that pushed every series (remote write
	// sends each series' value on each).
	pushes int
}

func start(t *testing.T, s setup) *harness {
	t.Helper()
	if s.maxElapsed == 0 {
		s.maxElapsed = 10 * time.Second
	}
	if s.timeout == 0 {
		s.timeout = 2 * time.Second
	}
	if s.shutdown == 0 {
		s.shutdown = 10 * time.Second
	}
	h := &harness{t: t, s: s, logs: &syncBuffer{}}
	switch {
	case s.libSrv != nil:
		h.lib = s.libSrv
	case s.rwSrv != nil:
		h.rw = s.rwSrv
	case s.otlpSrv != nil:
		h.otlp = s.otlpSrv
	case s.kind == libratoKind:
		h.lib = libratotest.New(append([]libratotest.Option{libratotest.WithSeed(3)}, s.lib...)...)
		t.Cleanup(h.lib.Close)
	case s.kind == rwKind:
		h.rw = rwtest.New(append([]rwtest.Option{rwtest.WithSeed(3)}, s.rw...)...)
		t.Cleanup(h.rw.Close)
	case s.kind.isOTLP():
		h.otlp = otlptest.New(otlptest.WithSeed(3))
		t.Cleanup(h.otlp.Close)
	}
	log := s.log
	if log == nil {
		log = logrus.New()
		log.SetOutput(h.logs)
	}
	o := adapter.Options{
		GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "faults-0", Log: log,
		ShutdownTimeout: s.shutdown, Tick: 5 * time.Millisecond, SpoolDir: s.spoolDir,
		// The built-in push sinks, with the backoff scaled down to
		// milliseconds (Librato's default starts at a second).
		Sinks: func(env sinks.Env, _ *prometheus.Registry) (map[string]sinks.Sink, []sinks.Factory, error) {
			return nil, []sinks.Factory{
				librato.NewFactoryWith(env, librato.Options{MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}),
				remotewrite.NewFactory(env),
				otlp.NewFactory(env),
			}, nil
		},
	}
	if s.tweak != nil {
		s.tweak(&o)
	}
	a, err := adapter.New(o)
	require.NoError(t, err)
	require.NoError(t, a.Start())
	h.a = a
	h.conn, err = grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{})))
	require.NoError(t, err)
	t.Cleanup(func() {
		h.conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	return h
}

// params is the handler config of the scenario's backend.
func (h *harness) params(edit ...func(*config.Params)) *types.Any {
	p := &config.Params{Metrics: []*config.Params_MetricInfo{requestsMetric}}
	switch h.s.kind {
	case libratoKind:
		// An hour-long period: nothing is sent but by the test's
		// flushes and the shutdown, so that rounds are deterministic.
		p.Librato = &config.LibratoParams{Url: h.lib.URL(), Email: libratotest.DefaultEmail, Token: libratotest.DefaultToken,
			Period: time.Hour, MaxRetryElapsed: h.s.maxElapsed, RequestTimeout: h.s.timeout}
	case rwKind:
		p.Prometheus = &config.PrometheusParams{DisableExposition: true, RemoteWrite: &config.RemoteWrite{
			Url: h.rw.URL(), Interval: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond,
			MaxRetryElapsed: h.s.maxElapsed, Timeout: h.s.timeout}}
	case otlpKind, otlpHTTPKind:
		p.Otlp = otlpBlock(h.otlp, h.s.kind)
		p.Otlp.MaxRetryElapsed, p.Otlp.Timeout = h.s.maxElapsed, h.s.timeout
	}
	if h.s.edit != nil {
		h.s.edit(p)
	}
	for _, e := range edit {
		e(p)
	}
	return anyOf(h.t, p)
}

// otlpBlock sends to srv with delta temporality, an hour-long interval
// (the test's flushes export) and millisecond backoff.
func otlpBlock(srv *otlptest.Server, k kind) *config.OtlpParams {
	o := &config.OtlpParams{Endpoint: srv.Addr(), Protocol: otlp.ProtocolGRPC, Insecure: true, Temporality: config.OtlpParams_DELTA,
		Interval: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	if k == otlpHTTPKind {
		o.Endpoint, o.Protocol = srv.URL(), otlp.ProtocolHTTP
	}
	return o
}

func anyOf(t testing.TB, p *config.Params) *types.Any {
	b, err := p.Marshal()
	require.NoError(t, err)
	return &types.Any{TypeUrl: config.TypeURL, Value: b}
}

// instances builds n instances of the counter, spread over paths label
// values starting at path first.
func instances(n, paths, first int) []*metricpb.InstanceMsg {
	out := make([]*metricpb.InstanceMsg, n)
	for i := range out {
		out[i] = &metricpb.InstanceMsg{Name: instanceName, Value: mt.Int(1),
			Dimensions: map[string]*policypb.Value{"path": mt.Str(fmt.Sprintf("/p%d", (first+i)%paths))}}
	}
	return out
}

// call sends one HandleMetric request, with a fresh dedup_id as Mixer does,
// and counts its instances as answered OK or not.
func (h *harness) call(cfg *types.Any, ins []*metricpb.InstanceMsg) error {
	req := &metricpb.HandleMetricRequest{AdapterConfig: cfg, Instances: ins, DedupId: strconv.FormatInt(h.ids.Add(1), 10)}
	_, err := metricpb.NewHandleMetricServiceClient(h.conn).HandleMetric(context.Background(), req)
	if err == nil {
		h.ok.Add(int64(len(ins)))
	} else {
		h.refused.Add(int64(len(ins)))
	}
	return err
}

// drive sends calls × perCall instances from workers goroutines, each call
// covering paths series, and requires every call to be answered OK.
func (h *harness) drive(cfg *types.Any, workers, calls, perCall, paths int) {
	h.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers*calls)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for c := 0; c < calls; c++ {
				if err := h.call(cfg, instances(perCall, paths, w+c)); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(h.t, err)
	}
}

// flush makes the sinks send now and wait for their send queues.
func (h *harness) flush(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	h.pushes++
	return h.a.Flush(ctx)
}

func (h *harness) shutdown(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return h.a.Shutdown(ctx)
}

// counters sums a counter of the adapter's registry by the value of one
// label (by reason, by sink).
func (h *harness) counters(name, by string) map[string]float64 {
	h.t.Helper()
	return gather(h.t, h.a.Registry(), name, by)
}

func gather(t testing.TB, g prometheus.Gatherer, name, by string) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == by {
					key = l.GetValue()
				}
			}
			switch {
			case m.GetCounter() != nil:
				// Drop counters exist at 0 from a sink's start (so that
				// alerts can be written in advance): only counts matter.
				if v := m.GetCounter().GetValue(); v != 0 {
					out[key] += v
				}
			case m.GetGauge() != nil:
				out[key] += m.GetGauge().GetValue()
			}
		}
	}
	return out
}

func (h *harness) drops() map[string]float64 {
	return h.counters("meshmetrics_instances_dropped_total", "reason")
}

func sum(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}

// received is what the backend holds, in instances.
func (h *harness) received() float64 {
	switch {
	case h.lib != nil:
		return h.lib.Total(libratoName)
	case h.otlp != nil:
		return h.otlp.Total(otlpName)
	}
	return h.rw.Total(rwName)
}

// reconcile checks, after a shutdown, that every instance answered OK was
// accepted and is either in the backend or counted as dropped, and returns
// the drops by reason.
//
// Delivery is at least once: a request whose answer was lost (its attempt
// timed out after the backend stored it) is sent again. The fakes behave as
// the backends do with it: Librato keeps one value per series and time, so
// the copy replaces the same values; Prometheus accepts an identical sample
// once. What is reconciled is therefore what the backend holds, and a
// Librato replacement that changed a value (a collision, which loses data)
// fails.
//
// Librato and OTLP (delta): instances received + dropped == accepted,
// exactly (Librato: and no value replaced by a different one).
//
// Remote write sends cumulative values, so a lost push is healed by the
// next one and drops count samples: the last value of each series sums to
// the accepted instances when the final push got through, and the samples
// stored plus those dropped are all that paths series produced over the
// pushes (one sample each per flush; a value and a stale marker at the
// shutdown); samples of requests sent again are not produced twice.
func (h *harness) reconcile(paths int, finalDelivered bool) map[string]float64 {
	h.t.Helper()
	t := h.t
	accepted := h.counters("meshmetrics_instances_accepted_total", "")[""]
	require.Equal(t, float64(h.ok.Load()), accepted, "every instance answered OK was accepted")
	require.Zero(t, sum(h.counters("meshmetrics_instances_rejected_total", "reason")), "nothing refused")
	drops := h.drops()
	switch h.s.kind {
	case libratoKind:
		require.Equal(t, accepted, h.received()+sum(drops), "instances: sent == received + dropped (%v)", drops)
		require.Zero(t, h.lib.Stats().Conflicts, "no value of a series and time replaced by another")
	case otlpKind, otlpHTTPKind:
		require.Empty(t, h.otlp.Violations())
		require.Equal(t, accepted, h.received()+sum(drops), "instances: sent == received + dropped (%v)", drops)
	case rwKind:
		require.Empty(t, h.rw.Violations())
		if finalDelivered {
			require.Equal(t, accepted, h.received(), "the last value of each series sums to the instances sent")
		}
		st := h.rw.Stats()
		produced := paths * (h.pushes + 2)
		require.Equal(t, float64(produced), float64(st.Samples+st.Duplicates-st.ResentSamples)+sum(drops),
			"samples: produced == stored + dropped (%v; %d requests sent again)", drops, st.Resent)
	}
	return drops
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
