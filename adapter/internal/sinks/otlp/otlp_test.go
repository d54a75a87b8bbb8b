package otlp_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp/otlptest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/tlstest"
	"github.com/meshmetrics/meshmetrics/config"
)

const (
	cumulative = metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
	delta      = metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
)

// TestMapsKindsToOTLPDataPoints: counters become monotonic sums, gauges
// gauges, distributions explicit-bucket histograms with the configured
// bounds, sum, count, min and max; labels become attributes (an empty one
// is no attribute), the replica the service.instance.id; over both
// protocols, with gzip and without.
func TestMapsKindsToOTLPDataPoints(t *testing.T) {
	for _, protocol := range protocols {
		for _, comp := range []config.OtlpParams_Compression{config.OtlpParams_GZIP, config.OtlpParams_NONE} {
			t.Run(fmt.Sprintf("%s/%s", protocol, comp), func(t *testing.T) {
				srv := otlptest.New()
				t.Cleanup(srv.Close)
				e := newEnv("pod-1")
				_, s := newSink(t, e, block(srv, protocol, func(o *config.OtlpParams) {
					o.Compression = comp
					o.ResourceAttributes = map[string]string{"k8s.cluster.name": "c1"}
				}))
				c, err := s.Bind(counter("requests", "path", "code"))
				require.NoError(t, err)
				g, err := s.Bind(&sinks.Metric{Namespace: "istio", Name: "in_flight", Kind: sinks.Gauge})
				require.NoError(t, err)
				h, err := s.Bind(&sinks.Metric{Namespace: "istio", Name: "latency", Description: "latency help", Kind: sinks.Distribution,
					Buckets: []float64{0.1, 1}, LabelNames: []string{"path"}, DurationUnit: config.DurationUnit_SECONDS})
				require.NoError(t, err)
				t0 := e.clk.Now()
				s.Consume(batch(t0, c, 1, "/a", "200"))
				s.Consume(batch(t0, c, 2, "/a", "200"))
				s.Consume(batch(t0, c, 1, "", "503"))
				s.Consume(batch(t0, g, 5))
				s.Consume(batch(t0, g, 4))
				for _, v := range []float64{0.05, 0.1, 0.5, 2} {
					s.Consume(batch(t0, h, v, "/a"))
				}
				e.clk.Advance(time.Second)
				flush(t, s)
				require.Empty(t, srv.Violations())

				st := srv.Stats()
				require.Equal(t, comp == config.OtlpParams_GZIP, st.Gzip == st.Requests)
				if protocol == otlp.ProtocolGRPC {
					require.Equal(t, st.Requests, st.GRPC)
				} else {
					require.Equal(t, st.Requests, st.HTTP)
				}
				res := map[string]string{"service.name": "meshmetrics", "service.instance.id": "pod-1", "k8s.cluster.name": "c1"}
				sums := srv.Series("istio.requests")
				require.Len(t, sums, 2)
				p := sums[otlptest.SeriesKey("istio.requests", "pod-1", map[string]string{"path": "/a", "code": "200"})]
				require.Len(t, p, 1)
				require.Equal(t, "sum", p[0].Kind)
				require.Equal(t, cumulative, p[0].Temporality)
				require.True(t, p[0].Monotonic)
				require.Equal(t, 3.0, p[0].Value)
				require.Equal(t, t0, p[0].Start, "a cumulative series starts at its first sample")
				require.Equal(t, t0.Add(time.Second), p[0].Time)
				require.Equal(t, "requests help", p[0].Description)
				require.Equal(t, res, p[0].ResourceAttr)
				p = sums[otlptest.SeriesKey("istio.requests", "pod-1", map[string]string{"code": "503"})]
				require.Len(t, p, 1, "the empty path is no attribute")
				require.Equal(t, 1.0, p[0].Value)

				gauges := srv.Series("istio.in_flight")
				require.Len(t, gauges, 1)
				for _, p := range gauges {
					require.Equal(t, "gauge", p[0].Kind)
					require.Equal(t, 4.0, p[0].Value, "the last value")
				}
				hist := srv.Series("istio.latency")[otlptest.SeriesKey("istio.latency", "pod-1", map[string]string{"path": "/a"})]
				require.Len(t, hist, 1)
				hp := hist[0]
				require.Equal(t, "histogram", hp.Kind)
				require.Equal(t, "s", hp.Unit)
				require.Equal(t, cumulative, hp.Temporality)
				require.Equal(t, []float64{0.1, 1}, hp.Bounds)
				require.Equal(t, []uint64{2, 1, 1}, hp.Buckets, "0.05 and 0.1 in (,0.1], 0.5 in (0.1,1], 2 above")
				require.Equal(t, uint64(4), hp.Count)
				require.True(t, hp.HasSum)
				require.InDelta(t, 2.65, hp.Sum, 1e-9)
				require.True(t, hp.HasMinMax)
				require.Equal(t, 0.05, hp.Min)
				require.Equal(t, 2.0, hp.Max)
			})
		}
	}
}

// TestDeltaIsExactAcrossExportsAndReplicas: two replicas export deltas of
// the same series to one receiver; every sample is in exactly one point
// (the receiver refuses overlapping delta points), the replicas' series
// never mix, and the totals are the samples sent.
func TestDeltaIsExactAcrossExportsAndReplicas(t *testing.T) {
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			srv := otlptest.New()
			t.Cleanup(srv.Close)
			var sent float64
			var sinksOf []*otlp.Sink
			var envs []*env
			for _, replica := range []string{"pod-a", "pod-b"} {
				e := newEnv(replica)
				_, s := newSink(t, e, block(srv, protocol, func(o *config.OtlpParams) { o.Temporality = config.OtlpParams_DELTA }))
				sinksOf, envs = append(sinksOf, s), append(envs, e)
			}
			var bindings []sinks.Binding
			for _, s := range sinksOf {
				b, err := s.Bind(counter("requests", "path"))
				require.NoError(t, err)
				bindings = append(bindings, b)
			}
			for round := 0; round < 4; round++ {
				for i, s := range sinksOf {
					b := bindings[i]
					for n := 0; n < 10; n++ {
						if round == 2 && n%2 == 1 {
							continue // a quiet series sends no point
						}
						v := float64(1 + n%3)
						s.Consume(batch(envs[i].clk.Now(), b, v, fmt.Sprintf("/p%d", n%4)))
						sent += v
					}
					envs[i].clk.Advance(time.Second)
					flush(t, s)
				}
			}
			require.Empty(t, srv.Violations())
			require.Equal(t, sent, srv.Total("istio.requests"))
			series := srv.Series("istio.requests")
			require.Len(t, series, 8, "4 paths × 2 replicas, told apart by service.instance.id")
			for _, ps := range series {
				for i, p := range ps {
					require.Equal(t, delta, p.Temporality)
					if i > 0 {
						require.Equal(t, ps[i-1].Time, p.Start, "each point starts where the previous one ended")
					}
				}
			}
		})
	}
}

// TestCumulativeStartResetsWhenASeriesRestarts: a series that expires and
// comes back starts a new cumulative run (a new start time, from zero), so
// that the receiver sees a reset, not a decrease; its final value before
// expiring is still sent.
func TestCumulativeStartResetsWhenASeriesRestarts(t *testing.T) {
	srv := otlptest.New()
	t.Cleanup(srv.Close)
	e := newEnv("pod-1")
	_, s := newSink(t, e, block(srv, otlp.ProtocolHTTP, nil))
	m := counter("requests", "path")
	m.Expiry, m.ExpiryCheck = time.Minute, time.Millisecond
	c, err := s.Bind(m)
	require.NoError(t, err)
	t0 := e.clk.Now()
	s.Consume(batch(t0, c, 5, "/a"))
	e.clk.Advance(time.Second)
	flush(t, s)
	s.Consume(batch(e.clk.Now(), c, 2, "/a"))
	e.clk.Advance(2 * time.Minute)
	require.Eventually(t, func() bool { return s.Len() == 0 }, 5*time.Second, time.Millisecond, "the idle series expires")
	t1 := e.clk.Now()
	s.Consume(batch(t1, c, 1, "/a"))
	e.clk.Advance(time.Second)
	flush(t, s)
	require.Empty(t, srv.Violations())
	ps := srv.Series("istio.requests")[otlptest.SeriesKey("istio.requests", "pod-1", map[string]string{"path": "/a"})]
	require.Len(t, ps, 3)
	require.Equal(t, []float64{5, 7, 1}, []float64{ps[0].Value, ps[1].Value, ps[2].Value})
	require.Equal(t, t0, ps[0].Start)
	require.Equal(t, t0, ps[1].Start, "the expired series' final value, in its own run")
	require.Equal(t, t1, ps[2].Start, "the series restarted")
	require.Equal(t, 8.0, srv.Total("istio.requests"))
}

// TestRequestsStayUnderTheLimits: an export is cut into requests of at
// most max_data_points_per_request points and max_request_bytes bytes.
func TestRequestsStayUnderTheLimits(t *testing.T) {
	for _, tc := range []struct {
		name              string
		points, bytes     int32
		wantMaxPts        int
		wantAtLeastReqs   int
		histogramsPerPath bool
	}{
		{name: "points", points: 7, bytes: 1 << 20, wantMaxPts: 7, wantAtLeastReqs: 29},
		{name: "bytes", points: 10000, bytes: 4096, wantMaxPts: 10000, wantAtLeastReqs: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := otlptest.New()
			t.Cleanup(srv.Close)
			e := newEnv("pod-1")
			_, s := newSink(t, e, block(srv, otlp.ProtocolGRPC, func(o *config.OtlpParams) {
				o.MaxDataPointsPerRequest, o.MaxRequestBytes = tc.points, tc.bytes
			}))
			c, err := s.Bind(counter("requests", "path"))
			require.NoError(t, err)
			h, err := s.Bind(&sinks.Metric{Namespace: "istio", Name: "latency", Kind: sinks.Distribution, Buckets: config.DefaultBuckets, LabelNames: []string{"path"}})
			require.NoError(t, err)
			for n := 0; n < 100; n++ {
				path := fmt.Sprintf("/a/long/path/to/make/requests/big/%03d", n)
				s.Consume(batch(e.clk.Now(), c, 1, path))
				s.Consume(batch(e.clk.Now(), h, 0.3, path))
			}
			e.clk.Advance(time.Second)
			flush(t, s)
			require.Empty(t, srv.Violations())
			st := srv.Stats()
			require.Equal(t, 200, st.Points)
			require.GreaterOrEqual(t, len(st.RequestPts), tc.wantAtLeastReqs)
			for i, n := range st.RequestPts {
				require.LessOrEqual(t, n, tc.wantMaxPts)
				require.LessOrEqual(t, st.RequestSizes[i], int(tc.bytes), "request %d", i)
			}
			require.Equal(t, 100.0, srv.Total("istio.requests"))
		})
	}
}

// TestAnswersAreRetriedAsTheSpecificationSays: the OTLP specification's
// retryable gRPC codes and HTTP statuses are retried (with the server's
// wait), everything else is dropped at once and counted.
func TestAnswersAreRetriedAsTheSpecificationSays(t *testing.T) {
	type tc struct {
		name     string
		fault    otlptest.Fault
		retried  bool
		protocol string
	}
	var cases []tc
	for _, p := range protocols {
		cases = append(cases,
			tc{"unavailable", otlptest.ServiceUnavailable(), true, p},
			tc{"throttled with a wait", otlptest.TooManyRequests().WithRetryAfter(0), true, p},
			tc{"bad request", otlptest.BadRequest(), false, p},
			tc{"internal error", otlptest.InternalError(), false, p},
			tc{"connection reset", otlptest.ConnectionReset(), true, p},
			tc{"bad gateway", otlptest.Fault{Status: 502}, true, p},
			tc{"gateway timeout", otlptest.Fault{Status: 504}, true, p},
		)
	}
	// 429 without a wait: HTTP retries it; gRPC's RESOURCE_EXHAUSTED
	// without RetryInfo is final.
	cases = append(cases, tc{"throttled without a wait", otlptest.TooManyRequests(), true, otlp.ProtocolHTTP},
		tc{"throttled without a wait", otlptest.TooManyRequests(), false, otlp.ProtocolGRPC})
	for _, c := range cases {
		t.Run(c.protocol+"/"+c.name, func(t *testing.T) {
			t.Parallel()
			srv := otlptest.New()
			t.Cleanup(srv.Close)
			e := newEnv("pod-1")
			_, s := newSink(t, e, block(srv, c.protocol, func(o *config.OtlpParams) { o.Temporality = config.OtlpParams_DELTA }))
			b, err := s.Bind(counter("requests"))
			require.NoError(t, err)
			srv.FailNext(2, c.fault)
			for range 5 {
				s.Consume(batch(e.clk.Now(), b, 1))
			}
			e.clk.Advance(time.Second)
			flush(t, s)
			require.Empty(t, srv.Violations())
			if c.retried {
				require.Equal(t, 5.0, srv.Total("istio.requests"), "delivered after the retries")
				require.Equal(t, 2.0, e.sends(s.Name(), telemetry.SendRetry))
				require.Zero(t, e.dropped(s.Name(), telemetry.DropBackendRejected))
			} else {
				require.Zero(t, srv.Total("istio.requests"))
				require.Equal(t, 1, srv.PendingFaults(), "one attempt, not retried")
				require.Equal(t, 5.0, e.dropped(s.Name(), telemetry.DropBackendRejected), "the request's instances counted")
				require.Equal(t, 1.0, e.sends(s.Name(), telemetry.SendRejected))
			}
		})
	}
}

// TestServerWaitIsHonoured: a RetryInfo (gRPC) or Retry-After (HTTP) of a
// second holds the next attempt back for that second, far beyond the
// millisecond backoff.
func TestServerWaitIsHonoured(t *testing.T) {
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			srv := otlptest.New()
			t.Cleanup(srv.Close)
			e := newEnv("pod-1")
			_, s := newSink(t, e, block(srv, protocol, nil))
			b, err := s.Bind(counter("requests"))
			require.NoError(t, err)
			s.Consume(batch(e.clk.Now(), b, 1))
			srv.FailNext(1, otlptest.TooManyRequests().WithRetryAfter(time.Second))
			began := time.Now()
			flush(t, s)
			require.GreaterOrEqual(t, time.Since(began), time.Second)
			require.Equal(t, 1.0, srv.Total("istio.requests"))
		})
	}
}

// TestPartialSuccessIsCountedAndLoggedOnce: rejected_data_points are
// dropped instances (partial_rejected), the request is not retried, and
// the log says so once per interval.
func TestPartialSuccessIsCountedAndLoggedOnce(t *testing.T) {
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			srv := otlptest.New()
			t.Cleanup(srv.Close)
			e := newEnv("pod-1")
			_, s := newSink(t, e, block(srv, protocol, func(o *config.OtlpParams) { o.Temporality = config.OtlpParams_DELTA }))
			require.Contains(t, e.dropsOf(s.Name()), telemetry.DropPartialRejected, "the counter exists at 0 from the start")
			b, err := s.Bind(counter("requests", "path"))
			require.NoError(t, err)
			for round := 0; round < 2; round++ {
				for n := 0; n < 4; n++ {
					for range 3 {
						s.Consume(batch(e.clk.Now(), b, 1, fmt.Sprintf("/p%d", n)))
					}
				}
				srv.FailNext(1, otlptest.PartialSuccess(1))
				e.clk.Advance(time.Second)
				flush(t, s)
			}
			require.Empty(t, srv.Violations())
			require.Equal(t, 6.0, e.dropped(s.Name(), telemetry.DropPartialRejected), "one point of 3 instances per export")
			require.Equal(t, 24.0, srv.Total("istio.requests")+e.dropped(s.Name(), telemetry.DropPartialRejected))
			require.Equal(t, 2.0, e.sends(s.Name(), telemetry.SendPartial))
			require.Equal(t, 2, srv.Stats().Requests, "not retried")
			require.Equal(t, 1, strings.Count(e.logs.String(), "otlp receiver rejected"), "logged once")
		})
	}
}

func (e *env) dropsOf(sink string) map[string]bool {
	out := map[string]bool{}
	mfs, _ := e.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "meshmetrics_instances_dropped_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var s, r string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "sink":
					s = l.GetValue()
				case "reason":
					r = l.GetValue()
				}
			}
			if s == sink {
				out[r] = true
			}
		}
	}
	return out
}

// TestHeaderFileIsReadAgainWhenItChanges: SolarWinds Observability's
// "authorization: Bearer <token>" from a mounted Secret; a rotated token is
// used from the next request on, and no token shows up in logs or the
// sink's name.
func TestHeaderFileIsReadAgainWhenItChanges(t *testing.T) {
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			srv := otlptest.New()
			t.Cleanup(srv.Close)
			dir := t.TempDir()
			path := filepath.Join(dir, "token")
			require.NoError(t, os.WriteFile(path, []byte("first-token\n"), 0o600))
			e := newEnv("pod-1")
			_, s := newSink(t, e, block(srv, protocol, func(o *config.OtlpParams) {
				o.HeaderFiles = []*config.OtlpParams_HeaderFile{{Name: "Authorization", Path: path, Prefix: "Bearer "}}
				o.Headers = map[string]string{"x-api-key": "static-secret", "X-Tenant": "t1"}
			}))
			b, err := s.Bind(counter("requests"))
			require.NoError(t, err)
			s.Consume(batch(e.clk.Now(), b, 1))
			flush(t, s)
			// A Secret update replaces the file; the modification time may
			// not move within the file system's granularity, the size does.
			require.NoError(t, os.WriteFile(path, []byte("second-token-longer"), 0o600))
			srv.FailNext(1, otlptest.BadRequest())
			s.Consume(batch(e.clk.Now(), b, 1))
			e.clk.Advance(time.Second)
			flush(t, s)
			hs := srv.Headers()
			require.Len(t, hs, 2)
			require.Equal(t, "Bearer first-token", hs[0]["authorization"])
			require.Equal(t, "Bearer second-token-longer", hs[1]["authorization"])
			require.Equal(t, "static-secret", hs[1]["x-api-key"])
			require.Equal(t, "t1", hs[1]["x-tenant"])
			for _, secret := range []string{"first-token", "second-token-longer", "static-secret"} {
				require.NotContains(t, e.logs.String(), secret)
				require.NotContains(t, s.Name(), secret)
				require.NotContains(t, e.Secrets.RedactString("x "+secret), secret, "registered for redaction")
			}
		})
	}
}

// TestMutualTLS: the receiver's certificate is verified with ca_file and
// the adapter presents its client certificate, over both protocols; a
// plaintext endpoint needs insecure.
func TestMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "otlp")
	server := ca.Issue(t, "server", tlstest.LeafOptions{CommonName: "127.0.0.1", DNSNames: []string{"localhost"}, IPs: ipLoopback(), Server: true})
	client := ca.Issue(t, "client", tlstest.LeafOptions{CommonName: "meshmetrics", Client: true})
	for _, protocol := range protocols {
		t.Run(protocol, func(t *testing.T) {
			srv := otlptest.New(otlptest.WithTLS(&tls.Config{Certificates: []tls.Certificate{server.TLS},
				ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}))
			t.Cleanup(srv.Close)
			e := newEnv("pod-1")
			o := block(srv, protocol, func(o *config.OtlpParams) {
				o.Insecure = false
				o.CaFile, o.CertFile, o.KeyFile = ca.File, client.CertFile, client.KeyFile
				if protocol == otlp.ProtocolGRPC {
					o.Endpoint = "https://" + srv.Addr()
				}
			})
			_, s := newSink(t, e, o)
			b, err := s.Bind(counter("requests"))
			require.NoError(t, err)
			s.Consume(batch(e.clk.Now(), b, 3))
			flush(t, s)
			require.Equal(t, 3.0, srv.Total("istio.requests"))
		})
	}
}

// TestConfigRules: what the otlp block refuses, with field paths.
func TestConfigRules(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		o    *config.OtlpParams
		want string
	}{
		{"no endpoint", &config.OtlpParams{}, "otlp.endpoint: required"},
		{"unknown protocol", &config.OtlpParams{Endpoint: "x:1", Protocol: "http/json"}, "otlp.protocol"},
		{"plaintext URL without insecure", &config.OtlpParams{Endpoint: "http://c:4318"}, "set insecure: true"},
		{"https with insecure", &config.OtlpParams{Endpoint: "https://c:4318", Insecure: true}, "is https but insecure is set"},
		{"grpc not host:port", &config.OtlpParams{Endpoint: "collector", Protocol: "grpc"}, "not host:port"},
		{"credentials in the URL", &config.OtlpParams{Endpoint: "https://u:p@c/v1/metrics"}, "must not carry credentials"},
		{"replica attribute", &config.OtlpParams{Endpoint: "https://c", ResourceAttributes: map[string]string{"service.instance.id": "x"}}, "otlp.resource_attributes"},
		{"protocol header", &config.OtlpParams{Endpoint: "https://c", Headers: map[string]string{"Content-Type": "x"}}, "set by the OTLP protocol"},
		{"duplicate header", &config.OtlpParams{Endpoint: "https://c", Headers: map[string]string{"authorization": "x"},
			HeaderFiles: []*config.OtlpParams_HeaderFile{{Name: "Authorization", Path: "/x"}}}, "also set by headers"},
		{"cert without key", &config.OtlpParams{Endpoint: "https://c", CertFile: "/c"}, "otlp.cert_file"},
		{"negative interval", &config.OtlpParams{Endpoint: "https://c", Interval: -time.Second}, "otlp.interval: must be > 0"},
		{"huge requests", &config.OtlpParams{Endpoint: "https://c", MaxRequestBytes: 1 << 30}, "otlp.max_request_bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &config.Params{Otlp: tc.o}
			errs := otlp.NewFactory(sinks.Env{}).Normalize(p)
			require.ErrorContains(t, errs, tc.want)
		})
	}
	// Check reads the files New needs.
	p := params(&config.OtlpParams{Endpoint: "https://c",
		HeaderFiles: []*config.OtlpParams_HeaderFile{{Name: "authorization", Path: filepath.Join(dir, "missing")}}})
	require.ErrorContains(t, otlp.NewFactory(sinks.Env{}).Check(p, nil), "otlp.header_files[0].path")
	p = params(&config.OtlpParams{Endpoint: "https://c", CaFile: filepath.Join(dir, "missing")})
	require.ErrorContains(t, otlp.NewFactory(sinks.Env{}).Check(p, nil), "otlp.ca_file")
	// Two metrics with one OTLP name.
	p = params(&config.OtlpParams{Endpoint: "https://c"})
	err := otlp.NewFactory(sinks.Env{}).Check(p, []*sinks.Metric{counter("a_b"), counter("a_b")})
	require.ErrorContains(t, err, "metrics[1].name")
	// Defaults are applied once and stay.
	o := &config.OtlpParams{Endpoint: "https://c"}
	require.Empty(t, otlp.NewFactory(sinks.Env{}).Normalize(&config.Params{Otlp: o}))
	before := *o
	require.Empty(t, otlp.NewFactory(sinks.Env{}).Normalize(&config.Params{Otlp: o}))
	require.Equal(t, before.String(), o.String())
	require.Equal(t, otlp.ProtocolHTTP, o.Protocol)
	require.Equal(t, config.DefaultOtlpInterval, o.Interval)
}

// TestKeyHoldsNoSecretAndFollowsTheBlock: the sink key shows the endpoint
// and a digest; a header value changes the digest without appearing.
func TestKeyHoldsNoSecretAndFollowsTheBlock(t *testing.T) {
	f := otlp.NewFactory(sinks.Env{KeySalt: []byte("salt")})
	a := params(&config.OtlpParams{Endpoint: "https://c.example:4318/v1/metrics", Headers: map[string]string{"authorization": "Bearer s3cret"}})
	b := params(&config.OtlpParams{Endpoint: "https://c.example:4318/v1/metrics", Headers: map[string]string{"authorization": "Bearer other"}})
	ka, kb := f.Key(a), f.Key(b)
	require.True(t, strings.HasPrefix(ka, "otlp:https://c.example:4318/v1/metrics#"), ka)
	require.NotEqual(t, ka, kb)
	require.NotContains(t, ka, "s3cret")
	require.Equal(t, ka, f.Key(params(&config.OtlpParams{Endpoint: "https://c.example:4318/v1/metrics", Headers: map[string]string{"authorization": "Bearer s3cret"}})))
}

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct{ ns, name, want string }{
		{"istio", "requests_total", "istio.requests_total"},
		{"istio", "requestcount.instance.istio-system", "istio.requestcount.instance.istio-system"},
		{"", "héllo wörld", "h_llo_w_rld"},
		{"", "1abc", ""},
		{"istio", "a:b", "istio.a_b"},
	} {
		require.Equal(t, tc.want, otlp.MetricName(&sinks.Metric{Namespace: tc.ns, Name: tc.name}), tc.name)
	}
}

// TestCloseSendsWhatIsPendingAndCountsWhatItCannot: Close exports the
// last deltas; a receiver that stays down within the timeout makes them
// shutdown_timeout drops, never silent losses.
func TestCloseSendsWhatIsPendingAndCountsWhatItCannot(t *testing.T) {
	srv := otlptest.New()
	t.Cleanup(srv.Close)
	e := newEnv("pod-1")
	_, s := newSink(t, e, block(srv, otlp.ProtocolGRPC, func(o *config.OtlpParams) { o.Temporality = config.OtlpParams_DELTA }))
	b, err := s.Bind(counter("requests"))
	require.NoError(t, err)
	for range 7 {
		s.Consume(batch(e.clk.Now(), b, 1))
	}
	srv.GoDown(0)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	require.Error(t, s.Close(ctx))
	require.Equal(t, 7.0, e.dropped(s.Name(), telemetry.DropShutdown)+e.dropped(s.Name(), telemetry.DropRetriesExceeded))
	require.Zero(t, srv.Total("istio.requests"))
}
