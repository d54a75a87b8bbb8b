package adapter_test

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/gogo/protobuf/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/golden"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/modelpb"
	"github.com/meshmetrics/meshmetrics/config"
)

type harness struct {
	a       *adapter.Adapter
	factory *sinktest.Factory
	conn    *grpc.ClientConn
	log     *bytes.Buffer
	sw      *syncWriter
}

func start(t *testing.T, tweak func(*adapter.Options)) *harness {
	t.Helper()
	h := &harness{factory: sinktest.NewFactory(), log: &bytes.Buffer{}}
	log := logrus.New()
	h.sw = &syncWriter{w: h.log}
	log.SetOutput(h.sw)
	o := adapter.Options{
		GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "test-0", Log: log,
		ShutdownTimeout: 5 * time.Second,
		Sinks: func(sinks.Env, *prometheus.Registry) (map[string]sinks.Sink, []sinks.Factory, error) {
			return nil, []sinks.Factory{h.factory}, nil
		},
	}
	if tweak != nil {
		tweak(&o)
	}
	a, err := adapter.New(o)
	require.NoError(t, err)
	require.NoError(t, a.Start())
	h.a = a
	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{})))
	require.NoError(t, err)
	h.conn = conn
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	return h
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (h *harness) send(t *testing.T, req *metricpb.HandleMetricRequest) error {
	t.Helper()
	_, err := metricpb.NewHandleMetricServiceClient(h.conn).HandleMetric(context.Background(), req)
	return err
}

// sendRaw sends pre-encoded bytes, as Mixer's pass-through codec does.
func (h *harness) sendRaw(t *testing.T, raw []byte) error {
	t.Helper()
	in := rawMessage(raw)
	return h.conn.Invoke(context.Background(), "/metric.HandleMetricService/HandleMetric", &in, &modelpb.ReportResult{})
}

// rawMessage satisfies the codec with bytes that are already encoded.
type rawMessage []byte

func (r *rawMessage) Size() int { return len(*r) }
func (r *rawMessage) MarshalToSizedBuffer(b []byte) (int, error) {
	return copy(b, *r), nil
}
func (r *rawMessage) Unmarshal(b []byte) error { *r = append((*r)[:0], b...); return nil }

func (h *harness) sink(t *testing.T) *sinktest.Sink {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, h.flush(ctx))
	s := h.factory.Sink("test")
	require.NotNil(t, s, "no handler config has reached the sink")
	return s
}

func (h *harness) flush(ctx context.Context) error {
	for {
		if s := h.factory.Sink("test"); s != nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return h.a.Flush(ctx)
}

func cfg(t *testing.T, p *config.Params) *types.Any {
	b, err := p.Marshal()
	require.NoError(t, err)
	return &types.Any{TypeUrl: config.TypeURL, Value: b}
}

var counterParams = &config.Params{Metrics: []*config.Params_MetricInfo{{
	InstanceName: "analyticcounter.instance.istio-system", Kind: config.Params_MetricInfo_COUNTER,
	Name: "damage_requests", LabelNames: []string{"path"},
}}}

// TestMixerLayoutRequestIsAccepted is the foundation's first acceptance
// test: bytes laid out exactly as Mixer writes them, params in sorted-key
// order, reach the sink as the right series and value.
func TestMixerLayoutRequestIsAccepted(t *testing.T) {
	h := start(t, nil)
	raw, err := golden.ReadHex("handlemetric-analyticcounter.hex")
	require.NoError(t, err)
	require.NoError(t, h.sendRaw(t, raw))
	require.Equal(t, map[string]sinktest.Aggregate{
		"istio_damage_requests{/v1/damage}": {Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1},
	}, h.sink(t).Series())
	require.Equal(t, 1.0, testutil.ToFloat64(h.a.Metrics().InstancesAccepted))
}

func TestBadInputGetsTheRightCodeAndTheProcessStaysUp(t *testing.T) {
	h := start(t, func(o *adapter.Options) { o.MaxRecvMsgSize = 64 << 10; o.MaxInstancesPerRequest = 500 })
	good := mt.Instance("analyticcounter.instance.istio-system", mt.Int(1), "path", mt.Str("/ok"))
	many := make([]*metricpb.InstanceMsg, 501)
	for i := range many {
		many[i] = good
	}
	huge := &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, counterParams),
		Instances: []*metricpb.InstanceMsg{mt.Instance("analyticcounter.instance.istio-system", mt.Int(1),
			"path", mt.Str(string(make([]byte, 100<<10))))}}

	tests := []struct {
		name string
		req  *metricpb.HandleMetricRequest
		raw  []byte
		code codes.Code
		msg  string
	}{
		{"wrong type_url", &metricpb.HandleMetricRequest{AdapterConfig: &types.Any{TypeUrl: "type.googleapis.com/adapter.prometheus.config.Params"},
			Instances: []*metricpb.InstanceMsg{good}}, nil, codes.InvalidArgument, `type_url "type.googleapis.com/adapter.prometheus.config.Params"`},
		{"garbage config bytes", &metricpb.HandleMetricRequest{AdapterConfig: &types.Any{TypeUrl: config.TypeURL, Value: []byte{0xff, 0x01}},
			Instances: []*metricpb.InstanceMsg{good}}, nil, codes.InvalidArgument, "does not decode"},
		{"invalid config", &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "x"}}}),
			Instances: []*metricpb.InstanceMsg{good}}, nil, codes.InvalidArgument, "metrics[0].kind: required"},
		{"unknown instance", &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, counterParams),
			Instances: []*metricpb.InstanceMsg{good, mt.Instance("nosuch.instance.default", mt.Int(1))}}, nil, codes.InvalidArgument, `"nosuch.instance.default"`},
		{"NaN value", &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, counterParams),
			Instances: []*metricpb.InstanceMsg{mt.Instance("analyticcounter.instance.istio-system", mt.Double(math.NaN())), good}}, nil, codes.InvalidArgument, "NaN"},
		{"random bytes", nil, []byte("\xde\xad\xbe\xef not a protobuf"), codes.InvalidArgument, "malformed"},
		{"truncated protobuf", nil, func() []byte {
			b, _ := (&metricpb.HandleMetricRequest{AdapterConfig: cfg(t, counterParams), Instances: []*metricpb.InstanceMsg{good}}).Marshal()
			return b[:len(b)-5]
		}(), codes.InvalidArgument, "malformed"},
		{"too many instances", &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, counterParams), Instances: many}, nil, codes.ResourceExhausted, "limit is 500"},
		{"oversized request", huge, nil, codes.ResourceExhausted, "larger than max"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.raw != nil {
				err = h.sendRaw(t, tc.raw)
			} else {
				err = h.send(t, tc.req)
			}
			require.Equal(t, tc.code, status.Code(err), "%v", err)
			require.Contains(t, status.Convert(err).Message(), tc.msg)
		})
	}
	// Still up, and the valid instances of the mixed batches were kept: one
	// from "unknown instance" and one from "NaN value".
	require.NoError(t, h.send(t, &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, counterParams), Instances: []*metricpb.InstanceMsg{good}}))
	require.Equal(t, 3.0, h.sink(t).Series()["istio_damage_requests{/ok}"].Sum)
	m := h.a.Metrics()
	require.Equal(t, 1.0, testutil.ToFloat64(m.InstancesRejected.WithLabelValues("unknown_instance")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.InstancesRejected.WithLabelValues("non_finite")))
	require.Equal(t, 501.0, testutil.ToFloat64(m.InstancesRejected.WithLabelValues("request_too_large")))
	require.Equal(t, 3.0, testutil.ToFloat64(m.InstancesRejected.WithLabelValues("bad_config")))
}

func TestValidateAndSessions(t *testing.T) {
	h := start(t, nil)
	c := modelpb.NewInfrastructureBackendClient(h.conn)
	resp, err := c.Validate(context.Background(), &modelpb.ValidateRequest{AdapterConfig: cfg(t, counterParams)})
	require.NoError(t, err)
	require.EqualValues(t, codes.OK, resp.Status.Code)
	resp, err = c.Validate(context.Background(), &modelpb.ValidateRequest{AdapterConfig: cfg(t, &config.Params{
		Metrics: []*config.Params_MetricInfo{{InstanceName: "a", Kind: config.Params_MetricInfo_GAUGE, LabelNames: []string{"x", "x"}}}})})
	require.NoError(t, err)
	require.EqualValues(t, codes.InvalidArgument, resp.Status.Code)
	require.Contains(t, resp.Status.Message, `metrics[0].label_names[1]: "x" is listed twice`)
	require.Zero(t, testutil.ToFloat64(h.a.Metrics().HandlersBuilt), "Validate builds nothing")

	_, err = c.CreateSession(context.Background(), &modelpb.CreateSessionRequest{})
	require.Equal(t, codes.Unimplemented, status.Code(err))
	require.Contains(t, status.Convert(err).Message(), "Mixer never opens sessions")
}

func TestHealthAndGracefulShutdownLoseNothing(t *testing.T) {
	h := start(t, func(o *adapter.Options) {})
	h.factory.Setup = func(s *sinktest.Sink) { s.ConsumeDelay = 300 * time.Microsecond } // keeps batches queued at shutdown
	health := healthpb.NewHealthClient(h.conn)
	for _, svc := range []string{"", "metric.HandleMetricService"} {
		r, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
		require.NoError(t, err)
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, r.Status)
	}

	// Senders keep calling while the adapter shuts down. Every call that
	// returned OK must reach the sink; the others must be refused.
	var accepted, refused int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				err := h.send(t, &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, counterParams), DedupId: strconv.Itoa(w*1e6 + i),
					Instances: []*metricpb.InstanceMsg{mt.Instance("analyticcounter.instance.istio-system", mt.Int(1))}})
				mu.Lock()
				if err == nil {
					accepted++
				} else {
					refused++
				}
				mu.Unlock()
			}
		}(w)
	}
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.a.Shutdown(ctx))
	close(stop)
	wg.Wait()

	s := h.factory.Sink("test")
	closed, _ := s.Closed()
	require.True(t, closed, "every sink is closed (and so flushed) by Shutdown")
	require.Greater(t, accepted, int64(0))
	require.Greater(t, refused, int64(0))
	require.Equal(t, float64(accepted), s.Series()["istio_damage_requests{}"].Sum, "nothing accepted is lost")
	require.Contains(t, h.log.String(), "nothing accepted was left unsent")
}

// TestShutdownGoesNotServingAndReadyzFails watches the gRPC health of the
// whole server and of HandleMetric while a shutdown drains: both go
// NOT_SERVING and /readyz answers 503 before the server stops. The watch
// stream is itself a call in flight, so the drain waits for it.
func TestShutdownGoesNotServingAndReadyzFails(t *testing.T) {
	h := start(t, nil)
	health := healthpb.NewHealthClient(h.conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watches := map[string]healthpb.Health_WatchClient{}
	for _, service := range []string{"", "metric.HandleMetricService"} {
		w, err := health.Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
		require.NoError(t, err)
		r, err := w.Recv()
		require.NoError(t, err)
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, r.Status, "service %q", service)
		watches[service] = w
	}
	require.Equal(t, http.StatusOK, getStatus(t, h, "/readyz"))

	done := make(chan error, 1)
	go func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		done <- h.a.Shutdown(sctx)
	}()
	for service, w := range watches {
		r, err := w.Recv()
		require.NoError(t, err)
		require.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, r.Status, "service %q", service)
	}
	require.Equal(t, http.StatusServiceUnavailable, getStatus(t, h, "/readyz"), "readiness fails while draining")
	cancel() // end the watches: the drain can finish
	require.NoError(t, <-done)
}

// TestReadyzFailsWhileASinkIsSaturated fills a sink's queue past 90% behind a
// slow sink: /readyz answers 503 naming the sink, then 200 once it drained.
func TestReadyzFailsWhileASinkIsSaturated(t *testing.T) {
	h := start(t, func(o *adapter.Options) { o.QueueCapacity = 10 })
	h.factory.Setup = func(s *sinktest.Sink) { s.ConsumeDelay = 3 * time.Second }
	instances := make([]*metricpb.InstanceMsg, 10)
	for i := range instances {
		instances[i] = mt.Instance("analyticcounter.instance.istio-system", mt.Int(1))
	}
	require.NoError(t, h.send(t, &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, counterParams), Instances: instances}))
	code, body := getBody(t, h, "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "sink test is saturated: 10 of 10 queued")
	require.Eventually(t, func() bool { return getStatus(t, h, "/readyz") == http.StatusOK }, 10*time.Second, 50*time.Millisecond)
}

func getStatus(t *testing.T, h *harness, path string) int {
	code, _ := getBody(t, h, path)
	return code
}

func getBody(t *testing.T, h *harness, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+h.a.HTTPAddr()+path, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestBuildInfoIsExported(t *testing.T) {
	h := start(t, func(o *adapter.Options) {
		o.Build = adapter.BuildInfo{Version: "v1.2.3", Revision: "abc123", GoVersion: "go1.26.8"}
	})
	code, body := getBody(t, h, "/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `meshmetrics_build_info{goversion="go1.26.8",revision="abc123",version="v1.2.3"} 1`+"\n")
}

// logText is what the adapter logged so far (safe while it logs).
func (h *harness) logText() string {
	h.sw.mu.Lock()
	defer h.sw.mu.Unlock()
	return h.sw.w.String()
}
