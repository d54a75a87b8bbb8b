package export_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

type req struct {
	id        int
	units     int
	instances int
}

func (r req) Units() int     { return r.units }
func (r req) Instances() int { return r.instances }

// memorySender is an in-memory sender reporting to d.
func memorySender(t *testing.T, d *drops, capacity int, maxElapsed time.Duration, push export.PushFunc[req]) *export.Sender[req] {
	t.Helper()
	s, err := export.New(export.Settings{Sink: "test", Capacity: capacity, Workers: 1,
		Retry:     export.RetrySettings{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxElapsed: maxElapsed},
		Telemetry: export.Telemetry{Metrics: d.metrics()}}, push, export.Codec[req]{})
	require.NoError(t, err)
	return s
}

func TestQueueDropsOldestWhenFull(t *testing.T) {
	release := make(chan struct{})
	var sent []int
	var mu sync.Mutex
	var d drops
	first := make(chan struct{})
	var once sync.Once
	q := memorySender(t, &d, 10, time.Minute, func(ctx context.Context, r req) error {
		once.Do(func() { close(first) })
		<-release
		mu.Lock()
		sent = append(sent, r.id)
		mu.Unlock()
		return nil
	})

	q.Put(req{id: 0, units: 4, instances: 40})
	<-first // request 0 is being sent, not queued
	for i := 1; i <= 4; i++ {
		q.Put(req{id: i, units: 4, instances: 40 + i})
	}
	q.Put(req{id: 99, units: 11, instances: 110}) // larger than the queue
	require.Equal(t, 8, q.Units(), "requests 3 and 4 remain")
	close(release)
	require.NoError(t, q.Close(context.Background()))
	require.Equal(t, []int{0, 3, 4}, sent)
	require.Equal(t, map[string]int{telemetry.DropSendQueueFull: 41 + 42 + 110}, d.get(), "requests 1, 2 and 99")
}

func TestQueueClassifiesFailures(t *testing.T) {
	var d drops
	q := memorySender(t, &d, 100, 50*time.Millisecond, func(ctx context.Context, r req) error {
		switch r.id {
		case 1:
			return export.Permanent(errors.New("400 bad name"))
		case 2:
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	q.Put(req{id: 1, units: 1, instances: 3})
	q.Put(req{id: 2, units: 1, instances: 5})
	q.Put(req{id: 3, units: 1, instances: 7})
	require.NoError(t, q.Drain(context.Background()))
	require.NoError(t, q.Close(context.Background()))
	require.Equal(t, map[string]int{telemetry.DropBackendRejected: 3, telemetry.DropRetriesExceeded: 5}, d.get())
	m := d.metrics()
	require.Equal(t, 1.0, testutil.ToFloat64(m.SinkSends.WithLabelValues("test", telemetry.SendOK)))
	require.Equal(t, 1.0, testutil.ToFloat64(m.SinkSends.WithLabelValues("test", telemetry.SendRejected)))
	require.Equal(t, 1.0, testutil.ToFloat64(m.SinkSends.WithLabelValues("test", telemetry.SendFailed)))
}

func TestQueueCloseDropsWhatCannotBeSent(t *testing.T) {
	var d drops
	q := memorySender(t, &d, 100, time.Hour, func(ctx context.Context, r req) error {
		<-ctx.Done() // backend hangs
		return ctx.Err()
	})
	for i := 0; i < 3; i++ {
		q.Put(req{id: i, units: 1, instances: 10})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, q.Close(ctx), context.DeadlineExceeded)
	require.Equal(t, map[string]int{telemetry.DropShutdown: 30}, d.get(), "in-flight and queued requests are counted as dropped at shutdown")
	q.Put(req{id: 9, units: 1, instances: 1})
	require.Equal(t, map[string]int{telemetry.DropShutdown: 31}, d.get())
}

func TestDropCountersExistAtZeroFromTheStart(t *testing.T) {
	for _, spool := range []bool{false, true} {
		t.Run(fmt.Sprintf("spool=%v", spool), func(t *testing.T) {
			var d drops
			s := export.Settings{Sink: "fresh", Capacity: 1, Telemetry: export.Telemetry{Metrics: d.metrics()}}
			if spool {
				s.Spool = openSpool(t, t.TempDir(), 1<<20, &drops{})
			}
			q, err := export.New(s, (&backend{}).send, reqCodec)
			require.NoError(t, err)
			defer q.Close(context.Background())
			for _, reason := range telemetry.PushDropReasons(spool) {
				require.Equal(t, 0.0, testutil.ToFloat64(d.metrics().InstancesDropped.WithLabelValues("fresh", reason)))
			}
			require.Equal(t, len(telemetry.PushDropReasons(spool)), testutil.CollectAndCount(d.metrics().InstancesDropped),
				"every reason the sender counts, and no other")
		})
	}
}

// httpPush is a push function in the style of the HTTP sinks: one POST,
// classified by export.ClassifyHTTP, plus a sink's own rules (extra).
func httpPush(url string, extra func(resp *http.Response, body string, cause error) error) export.PushFunc[req] {
	client := export.NewHTTPClient(nil)
	return func(ctx context.Context, r req) error {
		hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("payload"))
		if err != nil {
			return export.Permanent(err)
		}
		resp, err := client.Do(hr)
		if err != nil {
			return export.ClassifyHTTP(nil, err, fmt.Errorf("POST: %w", err))
		}
		defer resp.Body.Close()
		body := export.ReadBody(resp, 1<<10)
		if resp.StatusCode/100 == 2 {
			return nil
		}
		cause := fmt.Errorf("POST: HTTP %d: %s", resp.StatusCode, body)
		if extra != nil {
			if err := extra(resp, body, cause); err != nil {
				return err
			}
		}
		return export.ClassifyHTTP(resp, nil, cause)
	}
}

// rateLimit403 is Librato's rule, as a sink adds it: a 403 whose body says
// the rate limit was hit is worth retrying.
func rateLimit403(resp *http.Response, body string, cause error) error {
	if resp.StatusCode == http.StatusForbidden && strings.Contains(body, "API limit") {
		return cause
	}
	return nil
}

func TestRetryPolicy(t *testing.T) {
	tests := []struct {
		name     string
		statuses []int
		body     string
		extra    func(*http.Response, string, error) error
		drop     string // "" when delivered
		attempts int
	}{
		{"503 then ok", []int{503, 503, 200}, "", nil, "", 3},
		{"429 then ok", []int{429, 202}, "", nil, "", 2},
		{"400 is final", []int{400, 200}, `{"errors":{}}`, nil, telemetry.DropBackendRejected, 1},
		{"401 is final", []int{401, 200}, "", nil, telemetry.DropBackendRejected, 1},
		{"501 is final", []int{501, 200}, "", nil, telemetry.DropBackendRejected, 1},
		{"403 rate limit is retried", []int{403, 200}, `{"error":"You have hit the API limit"}`, rateLimit403, "", 2},
		{"403 otherwise final", []int{403, 200}, `{"error":"forbidden"}`, rateLimit403, telemetry.DropBackendRejected, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				require.Equal(t, "payload", string(body), "every attempt sends the whole body")
				i := int(n.Add(1)) - 1
				w.WriteHeader(tc.statuses[min(i, len(tc.statuses)-1)])
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			var d drops
			q := memorySender(t, &d, 10, 10*time.Second, httpPush(srv.URL, tc.extra))
			q.Put(req{id: 1, units: 1, instances: 2})
			require.NoError(t, q.Close(context.Background()))
			want := map[string]int{}
			if tc.drop != "" {
				want[tc.drop] = 2
			}
			require.Equal(t, want, d.get())
			require.EqualValues(t, tc.attempts, n.Load())
			require.Equal(t, float64(tc.attempts-1), testutil.ToFloat64(d.metrics().SinkSends.WithLabelValues("test", telemetry.SendRetry)))
		})
	}
}

func TestARefusalCarriesTheWholeBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"errors":{"params":{"name":["is not present"]}}}`)
	}))
	defer srv.Close()
	err := httpPush(srv.URL, nil)(context.Background(), req{})
	require.True(t, export.IsPermanent(err))
	require.ErrorContains(t, err, `HTTP 400: {"errors":{"params":{"name":["is not present"]}}}`, "the push function sees the whole body")
}

func TestRetryHonoursServerWaits(t *testing.T) {
	var times []time.Time
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		n := len(times)
		mu.Unlock()
		switch n {
		case 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		case 2:
			w.Header().Set("X-Wait-Ms", "150")
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	// The sink's own wait header, as Librato's X-Librato-RateLimit reset.
	ownWait := func(resp *http.Response, _ string, cause error) error {
		if v := resp.Header.Get("X-Wait-Ms"); v != "" {
			ms, _ := strconv.Atoi(v)
			return export.Throttle(cause, time.Duration(ms)*time.Millisecond)
		}
		return nil
	}
	var d drops
	q := memorySender(t, &d, 10, 10*time.Second, httpPush(srv.URL, ownWait))
	q.Put(req{id: 1, units: 1, instances: 1})
	require.NoError(t, q.Close(context.Background()))
	require.Empty(t, d.get())
	require.Len(t, times, 3)
	require.GreaterOrEqual(t, times[1].Sub(times[0]), time.Second, "Retry-After seconds are honoured, not the 5ms max backoff")
	require.GreaterOrEqual(t, times[2].Sub(times[1]), 150*time.Millisecond, "the sink's own wait header is honoured")
}

func TestRetriesStopAtTheDeadline(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	var d drops
	q := memorySender(t, &d, 10, 100*time.Millisecond, httpPush(srv.URL, nil))
	start := time.Now()
	q.Put(req{id: 1, units: 1, instances: 4})
	require.NoError(t, q.Drain(context.Background()))
	require.Less(t, time.Since(start), time.Second)
	require.Greater(t, n.Load(), int32(3), "retried with backoff until the deadline")
	require.Equal(t, map[string]int{telemetry.DropRetriesExceeded: 4}, d.get())
	require.NoError(t, q.Close(context.Background()))
}

func TestNetworkErrorsAreRetried(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			hj, _ := w.(http.Hijacker)
			c, _, _ := hj.Hijack()
			_ = c.Close() // connection reset mid-request
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	var d drops
	q := memorySender(t, &d, 10, 10*time.Second, httpPush(srv.URL, nil))
	q.Put(req{id: 1, units: 1, instances: 1})
	require.NoError(t, q.Close(context.Background()))
	require.Empty(t, d.get())
	require.EqualValues(t, 2, n.Load())
}

func TestAnUntrustedCertificateIsNotRetried(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.Add(1) }))
	defer srv.Close()
	err := httpPush(srv.URL, nil)(context.Background(), req{})
	require.True(t, export.IsPermanent(err), "%v", err)
	require.Zero(t, n.Load())
}

func TestEachAttemptIsTimedOut(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			select { // hangs the first attempt
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	var d drops
	q, err := export.New(export.Settings{Sink: "test", Capacity: 10, Timeout: 100 * time.Millisecond,
		Retry:     export.RetrySettings{MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxElapsed: 10 * time.Second},
		Telemetry: export.Telemetry{Metrics: d.metrics()}}, httpPush(srv.URL, nil), export.Codec[req]{})
	require.NoError(t, err)
	start := time.Now()
	q.Put(req{id: 1, units: 1, instances: 1})
	require.NoError(t, q.Close(context.Background()))
	require.Less(t, time.Since(start), 3*time.Second, "the hung attempt cost its timeout, not the request's retry time")
	require.Empty(t, d.get())
	require.EqualValues(t, 2, n.Load())
}

func TestAPartialSuccessIsDeliveredAndCountedApart(t *testing.T) {
	var d drops
	var n atomic.Int32
	q := memorySender(t, &d, 10, time.Second, func(ctx context.Context, r req) error {
		n.Add(1)
		return export.Partial(errors.New("1 of 2 measurements failed"))
	})
	q.Put(req{id: 1, units: 2, instances: 2})
	require.NoError(t, q.Close(context.Background()))
	require.EqualValues(t, 1, n.Load(), "not retried")
	require.Empty(t, d.get())
	require.Equal(t, 1.0, testutil.ToFloat64(d.metrics().SinkSends.WithLabelValues("test", telemetry.SendPartial)))
}

func TestBackoffGrowsAndIsJittered(t *testing.T) {
	for attempt, wantMs := range []int{10, 20, 40, 80, 100, 100} {
		want := time.Duration(wantMs) * time.Millisecond
		got := export.Backoff(10*time.Millisecond, 100*time.Millisecond, attempt)
		require.GreaterOrEqual(t, got, want/2, "attempt %d", attempt)
		require.LessOrEqual(t, got, want, "attempt %d", attempt)
	}
	huge := export.Backoff(10*time.Millisecond, 100*time.Millisecond, 1<<20)
	require.GreaterOrEqual(t, huge, 50*time.Millisecond, "a huge attempt count stays at the cap")
	require.LessOrEqual(t, huge, 100*time.Millisecond)
}
