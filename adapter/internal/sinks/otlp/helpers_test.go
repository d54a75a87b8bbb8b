package otlp_test

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp/otlptest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/config"
)

// start is the test clock's first reading.
var start = time.Unix(1700000000, 0)

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

type env struct {
	sinks.Env
	clk  *sinktest.Clock
	reg  *prometheus.Registry
	logs *logBuffer
}

func newEnv(replica string) *env {
	e := &env{reg: prometheus.NewRegistry(), clk: sinktest.NewClock(start), logs: &logBuffer{}}
	log := logrus.New()
	log.SetOutput(e.logs)
	e.Env = sinks.Env{Metrics: telemetry.New(e.reg, func() int { return 0 }, sinks.NewSet(1, time.Second)),
		Secrets: &logging.Secrets{}, Log: log, Limiter: logging.NewLimiter(log, time.Hour),
		Replica: replica, Now: e.clk.Now, Tick: 5 * time.Millisecond}
	return e
}

func (e *env) dropped(sink, reason string) float64 {
	return testutil.ToFloat64(e.Metrics.InstancesDropped.WithLabelValues(sink, reason))
}

func (e *env) sends(sink, result string) float64 {
	return testutil.ToFloat64(e.Metrics.SinkSends.WithLabelValues(sink, result))
}

// block is an otlp block for srv over protocol, with quick retries and an
// hour-long interval (the tests flush).
func block(srv *otlptest.Server, protocol string, edit func(o *config.OtlpParams)) *config.OtlpParams {
	o := &config.OtlpParams{Protocol: protocol, Insecure: true, Interval: time.Hour,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxRetryElapsed: 5 * time.Second, Timeout: 2 * time.Second}
	if protocol == otlp.ProtocolGRPC {
		o.Endpoint = srv.Addr()
	} else {
		o.Endpoint = srv.URL()
	}
	if edit != nil {
		edit(o)
	}
	return o
}

func params(o *config.OtlpParams) *config.Params {
	p, err := config.Normalize(&config.Params{
		Metrics: []*config.Params_MetricInfo{{InstanceName: "a", Kind: config.Params_MetricInfo_COUNTER}},
		Otlp:    o,
	})
	if err != nil {
		panic(err)
	}
	if errs := otlp.NewFactory(sinks.Env{}).Normalize(p); len(errs) > 0 {
		panic(errs)
	}
	return p
}

func newSink(t *testing.T, e *env, o *config.OtlpParams) (sinks.Factory, *otlp.Sink) {
	t.Helper()
	p := params(o)
	f := otlp.NewFactory(e.Env)
	require.NoError(t, f.Check(p, nil))
	s, err := f.New(p)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return f, s.(*otlp.Sink)
}

func counter(name string, labels ...string) *sinks.Metric {
	return &sinks.Metric{Namespace: "istio", Name: name, Description: name + " help", Kind: sinks.Counter, LabelNames: labels}
}

func batch(at time.Time, b sinks.Binding, v float64, labels ...string) *sinks.Batch {
	out := &sinks.Batch{Time: at}
	values := make([][]byte, len(labels))
	for i, l := range labels {
		values[i] = []byte(l)
	}
	out.Add(b, v, values)
	return out
}

func flush(t *testing.T, s *otlp.Sink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, s.Flush(ctx))
}

var protocols = []string{otlp.ProtocolGRPC, otlp.ProtocolHTTP}

func ipLoopback() []net.IP { return []net.IP{net.IPv4(127, 0, 0, 1)} }
