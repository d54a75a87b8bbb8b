package remotewrite_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/prompb"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/config"
)

// receiver is a strict remote-write 1.0 receiver: it enforces every rule of
// the specification (sorted, unique, non-empty labels with __name__; per
// series strictly increasing timestamps) and records what it accepted.
type receiver struct {
	*httptest.Server
	mu         sync.Mutex
	requests   int
	sizes      []int
	headers    []http.Header
	violations []string
	samples    map[string][]prompb.Sample // by series, "name{l=v,...}"
	last       map[string]int64
	// status answers request n (from 0); nil answers 204.
	status func(n int) int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{samples: map[string][]prompb.Sample{}, last: map[string]int64{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.requests
	r.requests++
	r.headers = append(r.headers, req.Header.Clone())
	if r.status != nil {
		if code := r.status(n); code/100 != 2 {
			w.WriteHeader(code)
			_, _ = io.WriteString(w, fmt.Sprintf("refused request %d\nsecond line", n))
			return
		}
	}
	body, _ := io.ReadAll(req.Body)
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		r.violations = append(r.violations, "not snappy block: "+err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(raw); err != nil {
		r.violations = append(r.violations, "not a WriteRequest: "+err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	size := 0
	for _, ts := range wr.Timeseries {
		size += len(ts.Samples)
		key := r.check(ts.Labels)
		for _, s := range ts.Samples {
			if last, ok := r.last[key]; ok && s.Timestamp <= last {
				r.violations = append(r.violations, fmt.Sprintf("%s: timestamp %d after %d", key, s.Timestamp, last))
			}
			r.last[key] = s.Timestamp
			r.samples[key] = append(r.samples[key], s)
		}
	}
	r.sizes = append(r.sizes, size)
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) check(labels []prompb.Label) string {
	var name string
	var parts []string
	for i, l := range labels {
		switch {
		case l.Name == "" || l.Value == "":
			r.violations = append(r.violations, fmt.Sprintf("empty label %q=%q", l.Name, l.Value))
		case i > 0 && labels[i-1].Name >= l.Name:
			r.violations = append(r.violations, fmt.Sprintf("labels not sorted or not unique: %v", labels))
		}
		if l.Name == "__name__" {
			name = l.Value
			continue
		}
		parts = append(parts, l.Name+"="+l.Value)
	}
	if name == "" {
		r.violations = append(r.violations, fmt.Sprintf("no __name__: %v", labels))
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

// values returns each series' sample values (stale markers as "stale").
func (r *receiver) values() map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]string{}
	for k, ss := range r.samples {
		for _, s := range ss {
			v := fmt.Sprint(s.Value)
			if math.Float64bits(s.Value) == remotewrite.StaleNaN {
				v = "stale"
			}
			out[k] = append(out[k], v)
		}
	}
	return out
}

func (r *receiver) timestamps(key string) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, s := range r.samples[key] {
		out = append(out, s.Timestamp)
	}
	return out
}

func (r *receiver) clean(t *testing.T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Empty(t, r.violations)
}

type env struct {
	sinks.Env
	clk *sinktest.Clock
	reg *prometheus.Registry
}

func newEnv() *env {
	e := &env{reg: prometheus.NewRegistry(), clk: sinktest.NewClock(time.UnixMilli(1600000000000))}
	e.Env = sinks.Env{Metrics: telemetry.New(e.reg, func() int { return 0 }, sinks.NewSet(1, time.Second)),
		Secrets: &logging.Secrets{}, Replica: "pod-1", Now: e.clock, Tick: 5 * time.Millisecond}
	return e
}

func (e *env) clock() time.Time { return e.clk.Now() }

func (e *env) advance(d time.Duration) { e.clk.Advance(d) }

func rwParams(url string, edit func(*config.RemoteWrite)) *config.Params {
	rw := &config.RemoteWrite{Url: url, Interval: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	if edit != nil {
		edit(rw)
	}
	p, err := config.Normalize(&config.Params{
		Metrics:    []*config.Params_MetricInfo{{InstanceName: "a", Kind: config.Params_MetricInfo_COUNTER}},
		Prometheus: &config.PrometheusParams{DisableExposition: true, RemoteWrite: rw},
	})
	if err != nil {
		panic(err)
	}
	if errs := remotewrite.NewFactory(sinks.Env{}).Normalize(p); len(errs) > 0 {
		panic(errs)
	}
	return p
}

func newSink(t *testing.T, e *env, p *config.Params) (sinks.Factory, *remotewrite.Sink) {
	t.Helper()
	f := remotewrite.NewFactory(e.Env)
	require.NoError(t, f.Check(p, nil))
	s, err := f.New(p)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return f, s.(*remotewrite.Sink)
}

func counter(name string, labels ...string) *sinks.Metric {
	return &sinks.Metric{Namespace: "istio", Name: name, Description: name, Kind: sinks.Counter, LabelNames: labels}
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

func flush(t *testing.T, s *remotewrite.Sink) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.Flush(ctx))
}

func TestPushesCumulativeSeriesInBoundedRequests(t *testing.T) {
	rcv := newReceiver(t)
	e := newEnv()
	_, s := newSink(t, e, rwParams(rcv.URL, func(rw *config.RemoteWrite) {
		rw.MaxSamplesPerSend = 3
		rw.ExternalLabels = map[string]string{"cluster": "c1", "Zone": "z"}
		rw.ReplicaLabel = "replica"
		rw.Headers = map[string]string{"X-Scope-OrgID": "tenant-1"}
	}))
	c, err := s.Bind(counter("requests_total", "path", "code"))
	require.NoError(t, err)
	g, err := s.Bind(&sinks.Metric{Namespace: "istio", Name: "in_flight", Kind: sinks.Gauge})
	require.NoError(t, err)
	h, err := s.Bind(&sinks.Metric{Namespace: "istio", Name: "latency", Kind: sinks.Distribution, Buckets: []float64{0.1, 1}, LabelNames: []string{"path"}})
	require.NoError(t, err)
	now := e.clock()
	s.Consume(batch(now, c, 1, "/a", "200"))
	s.Consume(batch(now, c, 2, "/a", "200"))
	s.Consume(batch(now, c, 1, "", "503"))
	s.Consume(batch(now, g, 5))
	s.Consume(batch(now, g, 4))
	s.Consume(batch(now, h, 0.05, "/a"))
	s.Consume(batch(now, h, 2, "/a"))
	flush(t, s)

	ext := "Zone=z,cluster=c1,"
	require.Equal(t, map[string][]string{
		"istio_requests_total{" + ext + "code=200,path=/a,replica=pod-1}": {"3"},
		"istio_requests_total{" + ext + "code=503,replica=pod-1}":         {"1"},
		"istio_in_flight{" + ext + "replica=pod-1}":                       {"4"},
		"istio_latency_bucket{" + ext + "le=0.1,path=/a,replica=pod-1}":   {"1"},
		"istio_latency_bucket{" + ext + "le=1,path=/a,replica=pod-1}":     {"1"},
		"istio_latency_bucket{" + ext + "le=+Inf,path=/a,replica=pod-1}":  {"2"},
		"istio_latency_sum{" + ext + "path=/a,replica=pod-1}":             {"2.05"},
		"istio_latency_count{" + ext + "path=/a,replica=pod-1}":           {"2"},
	}, rcv.values(), "empty labels dropped, external and replica labels added, names as scraped")
	rcv.clean(t)
	require.Equal(t, []int{3, 3, 2}, rcv.sizes, "8 samples in requests of at most 3")
	for _, hd := range rcv.headers {
		require.Equal(t, "snappy", hd.Get("Content-Encoding"))
		require.Equal(t, "application/x-protobuf", hd.Get("Content-Type"))
		require.Equal(t, "0.1.0", hd.Get("X-Prometheus-Remote-Write-Version"))
		require.True(t, strings.HasPrefix(hd.Get("User-Agent"), "meshmetrics/"))
		require.Equal(t, "tenant-1", hd.Get("X-Scope-Orgid"))
	}
	require.Equal(t, 3.0, testutil.ToFloat64(e.Metrics.SinkSends.WithLabelValues(s.Name(), "ok")))
}

func TestTimestampsStrictlyIncreaseEvenWhenTheClockStands(t *testing.T) {
	rcv := newReceiver(t)
	e := newEnv()
	_, s := newSink(t, e, rwParams(rcv.URL, nil))
	c, err := s.Bind(counter("hits"))
	require.NoError(t, err)
	s.Consume(batch(e.clock(), c, 1))
	for i := 0; i < 3; i++ {
		flush(t, s)
	}
	t0 := e.clock().UnixMilli()
	require.Equal(t, []int64{t0, t0 + 1, t0 + 2}, rcv.timestamps("istio_hits{}"))
	e.advance(time.Minute)
	flush(t, s)
	require.Equal(t, t0+60000, rcv.timestamps("istio_hits{}")[3], "the clock again once it is ahead")
	rcv.clean(t)
}

func TestEndedSeriesGetTheirLastValueThenAStaleMarker(t *testing.T) {
	rcv := newReceiver(t)
	e := newEnv()
	_, s := newSink(t, e, rwParams(rcv.URL, nil))
	expiring := counter("idle", "l")
	expiring.Expiry, expiring.ExpiryCheck = time.Minute, time.Second
	idle, err := s.Bind(expiring)
	require.NoError(t, err)
	s.Consume(batch(e.clock(), idle, 1, "x"))
	flush(t, s)
	e.advance(2 * time.Minute)
	require.Eventually(t, func() bool { return s.Len() == 0 }, 5*time.Second, 5*time.Millisecond, "idle series expire")
	flush(t, s)
	require.Equal(t, map[string][]string{"istio_idle{l=x}": {"1", "1", "stale"}}, rcv.values())
	rcv.clean(t)
}

// TestUnboundSeriesAreTheSinks: a metric whose last handler config closed
// (evicted, idle) keeps its series, pushed with their cumulative values
// until they expire; a config that binds the definition again continues
// them, with no reset and no stale marker.
func TestUnboundSeriesAreTheSinks(t *testing.T) {
	rcv := newReceiver(t)
	e := newEnv()
	_, s := newSink(t, e, rwParams(rcv.URL, nil))
	gone, err := s.Bind(counter("gone"))
	require.NoError(t, err)
	s.Consume(batch(e.clock(), gone, 1))
	flush(t, s)
	s.Consume(batch(e.clock(), gone, 1)) // not pushed yet when unbound
	s.Unbind(gone)
	e.advance(2 * time.Minute)
	flush(t, s)
	again, err := s.Bind(counter("gone"))
	require.NoError(t, err)
	s.Consume(batch(e.clock(), again, 7))
	flush(t, s)
	require.Equal(t, map[string][]string{"istio_gone{}": {"1", "2", "9"}}, rcv.values())
	rcv.clean(t)
}

func TestCloseSendsFinalValuesAndStaleMarkers(t *testing.T) {
	rcv := newReceiver(t)
	e := newEnv()
	f := remotewrite.NewFactory(e.Env)
	s, err := f.New(rwParams(rcv.URL, nil))
	require.NoError(t, err)
	c, err := s.Bind(counter("hits"))
	require.NoError(t, err)
	s.Consume(batch(e.clock(), c, 3))
	require.NoError(t, s.Close(context.Background()))
	require.Equal(t, map[string][]string{"istio_hits{}": {"3", "stale"}}, rcv.values())
	rcv.clean(t)
}

func TestRetriesAndDrops(t *testing.T) {
	tests := []struct {
		name     string
		status   func(n int) int
		values   []string
		result   string
		reason   string
		requests int
	}{
		{"5xx retried", func(n int) int { return map[int]int{0: 503, 1: 500}[n] + 204*b2i(n > 1) }, []string{"1"}, "ok", "", 3},
		{"429 retried", func(n int) int { return 429*b2i(n == 0) + 204*b2i(n > 0) }, []string{"1"}, "ok", "", 2},
		{"400 dropped", func(int) int { return 400 }, nil, "rejected", telemetry.DropBackendRejected, 1},
		{"401 dropped", func(int) int { return 401 }, nil, "rejected", telemetry.DropBackendRejected, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rcv := newReceiver(t)
			rcv.status = tc.status
			e := newEnv()
			_, s := newSink(t, e, rwParams(rcv.URL, nil))
			c, err := s.Bind(counter("hits"))
			require.NoError(t, err)
			s.Consume(batch(e.clock(), c, 1))
			flush(t, s)
			want := map[string][]string{}
			if tc.values != nil {
				want["istio_hits{}"] = tc.values
			}
			require.Equal(t, want, rcv.values())
			require.Equal(t, tc.requests, rcv.requests)
			require.Equal(t, 1.0, testutil.ToFloat64(e.Metrics.SinkSends.WithLabelValues(s.Name(), tc.result)))
			if tc.reason != "" {
				require.Equal(t, 1.0, testutil.ToFloat64(e.Metrics.InstancesDropped.WithLabelValues(s.Name(), tc.reason)), "one sample dropped")
			}
		})
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestUnreachableReceiverIsRetriedUntilTheDeadline(t *testing.T) {
	rcv := newReceiver(t)
	url := rcv.URL
	rcv.Close() // connection refused from now on
	e := newEnv()
	_, s := newSink(t, e, rwParams(url, func(rw *config.RemoteWrite) { rw.MaxRetryElapsed = 100 * time.Millisecond }))
	c, err := s.Bind(counter("hits"))
	require.NoError(t, err)
	s.Consume(batch(e.clock(), c, 1))
	flush(t, s)
	require.Equal(t, 1.0, testutil.ToFloat64(e.Metrics.InstancesDropped.WithLabelValues(s.Name(), telemetry.DropRetriesExceeded)))
	require.Greater(t, testutil.ToFloat64(e.Metrics.SinkSends.WithLabelValues(s.Name(), "retry")), 1.0)
}

func TestAuthAndSecrets(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("first-token-abc\n"), 0o600))
	pwFile := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pwFile, []byte("s3cret-pw"), 0o600))
	rcv := newReceiver(t)

	e := newEnv()
	bearer := rwParams(rcv.URL, func(rw *config.RemoteWrite) { rw.BearerTokenFile = tokenFile })
	_, s := newSink(t, e, bearer)
	c, err := s.Bind(counter("hits"))
	require.NoError(t, err)
	s.Consume(batch(e.clock(), c, 1))
	flush(t, s)
	time.Sleep(10 * time.Millisecond) // a modification time the file system can tell apart
	require.NoError(t, os.WriteFile(tokenFile, []byte("second-token-xyz"), 0o600))
	flush(t, s)
	require.Equal(t, "Bearer first-token-abc", rcv.headers[0].Get("Authorization"))
	require.Equal(t, "Bearer second-token-xyz", rcv.headers[1].Get("Authorization"), "the file is read again when it changes")
	require.Equal(t, "[REDACTED]", e.Secrets.RedactString("second-token-xyz"), "tokens read are registered as secrets")

	withPassword := rwParams("https://bob:url-pass@example.invalid/api/v1/write", func(rw *config.RemoteWrite) {
		rw.BasicAuth = &config.BasicAuth{Username: "bob", Password: "inline-pass"}
		rw.Headers = map[string]string{"X-Api-Key": "header-key-123"}
	})
	f := remotewrite.NewFactory(e.Env)
	key := f.Key(withPassword)
	require.True(t, strings.HasPrefix(key, "remote_write:https://bob:xxxxx@example.invalid/api/v1/write#"), key)
	for _, secret := range []string{"url-pass", "inline-pass", "header-key-123"} {
		require.NotContains(t, key, secret)
	}
	other := rwParams("https://bob:url-pass@example.invalid/api/v1/write", func(rw *config.RemoteWrite) {
		rw.BasicAuth = &config.BasicAuth{Username: "bob", Password: "changed-pass"}
		rw.Headers = map[string]string{"X-Api-Key": "header-key-123"}
	})
	require.NotEqual(t, key, f.Key(other), "a changed secret is a different destination")
	require.Equal(t, key, f.Key(withPassword), "stable")

	e2 := newEnv()
	basic := rwParams(rcv.URL, func(rw *config.RemoteWrite) { rw.BasicAuth = &config.BasicAuth{Username: "bob", PasswordFile: pwFile} })
	_, s2 := newSink(t, e2, basic)
	c2, err := s2.Bind(counter("hits"))
	require.NoError(t, err)
	s2.Consume(batch(e2.clock(), c2, 1))
	flush(t, s2)
	req := &http.Request{Header: rcv.headers[2]}
	user, pw, ok := req.BasicAuth()
	require.True(t, ok)
	require.Equal(t, []string{"bob", "s3cret-pw"}, []string{user, pw})
}

func TestKeys(t *testing.T) {
	f := remotewrite.NewFactory(newEnv().Env)
	a := rwParams("http://prom:9090/api/v1/write", nil)
	b := rwParams("http://prom:9090/api/v1/write", func(rw *config.RemoteWrite) { rw.ExternalLabels = map[string]string{"x": "1"} })
	require.Regexp(t, `^remote_write:http://prom:9090/api/v1/write#[0-9a-f]{12}$`, f.Key(a))
	require.NotEqual(t, f.Key(a), f.Key(b))
	require.Equal(t, "", f.Key(&config.Params{}))
}

func TestCheck(t *testing.T) {
	metrics := func(labels ...string) []*sinks.Metric { return []*sinks.Metric{counter("hits", labels...)} }
	tests := []struct {
		name    string
		edit    func(*config.RemoteWrite)
		metrics []*sinks.Metric
		want    string
	}{
		{"ok", func(rw *config.RemoteWrite) {
			rw.ExternalLabels = map[string]string{"cluster": "c"}
			rw.ReplicaLabel = "replica"
		},
			metrics("path"), ""},
		{"label clashes with external", func(rw *config.RemoteWrite) { rw.ExternalLabels = map[string]string{"cluster": "c"} },
			metrics("cluster"), `label "cluster" is also set by external_labels`},
		{"label clashes with replica", func(rw *config.RemoteWrite) { rw.ReplicaLabel = "pod" }, metrics("pod"), `label "pod" is also set by replica_label`},
		{"bad external name", func(rw *config.RemoteWrite) { rw.ExternalLabels = map[string]string{"a-b": "c"} }, nil, `"a-b" is not a valid label name`},
		{"empty external value", func(rw *config.RemoteWrite) { rw.ExternalLabels = map[string]string{"a": ""} }, nil, "empty value"},
		{"two auths", func(rw *config.RemoteWrite) {
			rw.BearerTokenFile = "/t"
			rw.BasicAuth = &config.BasicAuth{Username: "u"}
		}, nil, "not both"},
		{"missing CA", func(rw *config.RemoteWrite) { rw.CaFile = "/nonexistent/ca.pem" }, nil, "ca_file"},
		{"missing bearer token file", func(rw *config.RemoteWrite) { rw.BearerTokenFile = "/nonexistent/token" }, nil, "bearer_token_file: file /nonexistent/token"},
		{"missing password file", func(rw *config.RemoteWrite) {
			rw.BasicAuth = &config.BasicAuth{Username: "u", PasswordFile: "/nonexistent/pw"}
		}, nil, "basic_auth.password_file: file /nonexistent/pw"},
		{"implicit", nil, []*sinks.Metric{{Name: "x", Implicit: true}}, "fixed label names"},
	}
	f := remotewrite.NewFactory(newEnv().Env)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := rwParams("http://prom/api/v1/write", tc.edit)
			err := f.Check(p, tc.metrics)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestBindRefusesImplicitAndClashingMetrics(t *testing.T) {
	rcv := newReceiver(t)
	e := newEnv()
	_, s := newSink(t, e, rwParams(rcv.URL, nil))
	_, err := s.Bind(&sinks.Metric{Name: "x", Implicit: true})
	require.ErrorContains(t, err, "fixed label names")
	_, err = s.Bind(&sinks.Metric{Namespace: "istio", Name: "lat", Kind: sinks.Distribution, Buckets: []float64{1}})
	require.NoError(t, err)
	_, err = s.Bind(counter("lat_count"))
	require.ErrorContains(t, err, "which metric istio_lat already writes")
}
