package librato

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/config"
)

func TestRateLimitWait(t *testing.T) {
	now := time.Unix(1600000000, 0)
	s := &Sink{env: sinks.Env{Now: func() time.Time { return now }}.WithDefaults()}
	header := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name   string
		header http.Header
		want   time.Duration
		ok     bool
	}{
		{"no headers", header(), 0, false},
		{"remaining", header(HeaderRateLimitStd, "limit=600,remaining=3,reset=1600000030"), 0, false},
		{"exhausted: wait for the reset", header(HeaderRateLimitStd, "limit=600,remaining=0,reset=1600000030"), 30 * time.Second, true},
		{"reset passed: nothing to wait for", header(HeaderRateLimitStd, "limit=600,remaining=0,reset=1599999999"), 0, false},
		{"both exhausted: the later reset", header(HeaderRateLimitStd, "reset=1600000010,limit=600,remaining=0",
			HeaderRateLimitAgg, "limit=10,remaining=0,reset=1600000045"), 45 * time.Second, true},
		{"unparseable", header(HeaderRateLimitAgg, "remaining=0"), 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := s.rateLimitWait(tc.header)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestExhaustedRateLimitPausesTheNextRequest(t *testing.T) {
	now := time.Unix(1600000000, 0)
	s := &Sink{env: sinks.Env{Now: func() time.Time { return now }}.WithDefaults()}
	require.NoError(t, s.waitRateLimit(context.Background()), "no pause yet")
	h := http.Header{}
	h.Set(HeaderRateLimitStd, "limit=600,remaining=0,reset=1600003600")
	s.noteRateLimit(h)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, s.waitRateLimit(ctx), context.Canceled, "an hour's pause: the request waits, bounded by its context")
}

func TestTokenSourceKeepsTheLastGoodToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte("  first-token\n"), 0o600))
	secrets := &logging.Secrets{}
	ts, err := newTokenSource(&config.LibratoParams{TokenPath: path}, secrets, nil)
	require.NoError(t, err)
	tok, err := ts.Token()
	require.NoError(t, err)
	require.Equal(t, "first-token", tok)

	require.NoError(t, os.Remove(path))
	tok, err = ts.Token()
	require.ErrorIs(t, err, errNoToken)
	require.Equal(t, "first-token", tok)
	require.NotContains(t, err.Error(), "first-token")
	require.Contains(t, err.Error(), path)

	require.NoError(t, os.WriteFile(path, []byte("second-token"), 0o600))
	tok, err = ts.Token()
	require.NoError(t, err)
	require.Equal(t, "second-token", tok)
	require.Equal(t, logging.Redacted, secrets.RedactString("second-token"))
}

func TestNewSinkRefusesAnUnloadableToken(t *testing.T) {
	_, err := newTokenSource(&config.LibratoParams{TokenPath: filepath.Join(t.TempDir(), "absent")}, &logging.Secrets{}, nil)
	require.ErrorIs(t, err, errNoToken)
	_, err = newTokenSource(&config.LibratoParams{TokenEnv: "MESHMETRICS_TEST_EMPTY"}, &logging.Secrets{}, nil)
	require.ErrorContains(t, err, "MESHMETRICS_TEST_EMPTY")
}

// TestPushNamesTheServersWait checks what one attempt tells the retry
// layer: the wait before a retry is the server's when it names one (a
// Throttle), else none (the layer's exponential backoff, export's
// TestBackoffGrowsAndIsJittered).
func TestPushNamesTheServersWait(t *testing.T) {
	now := time.Unix(1600000000, 0)
	exhausted := "limit=600,remaining=0,reset=1600000042"
	tests := []struct {
		name   string
		status int
		header []string
		body   string
		want   time.Duration // exact, or 0 for "no wait named"
		final  bool
	}{
		{name: "429 with Retry-After", status: 429, header: []string{"Retry-After", "7"}, want: 7 * time.Second},
		{name: "429 with an exhausted rate limit", status: 429, header: []string{HeaderRateLimitStd, exhausted}, want: 42 * time.Second},
		{name: "rate-limit 403", status: 403, header: []string{HeaderRateLimitAgg, exhausted}, body: `{"error":"You have hit the API limit for measurements"}`,
			want: 42 * time.Second},
		{name: "rate-limit 403 without headers", status: 403, body: `{"error":"You have hit the API limit for measurements"}`},
		{name: "other 403 is final", status: 403, header: []string{HeaderRateLimitAgg, exhausted}, body: `{"errors":{"request":["forbidden"]}}`, final: true},
		{name: "503 ignores the rate-limit reset", status: 503, header: []string{HeaderRateLimitStd, exhausted}},
		{name: "network error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for i := 0; i < len(tc.header); i += 2 {
					w.Header().Set(tc.header[i], tc.header[i+1])
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			url := srv.URL
			if tc.status == 0 {
				srv.Close() // connection refused
			} else {
				defer srv.Close()
			}
			env := sinks.Env{Now: func() time.Time { return now }}.WithDefaults()
			p := &config.Params{Librato: &config.LibratoParams{Token: "test-token-1", Url: url}}
			require.Empty(t, normalize(p.Librato))
			s, err := newSink("test", p.Librato, env, Options{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}.withDefaults())
			require.NoError(t, err)
			t.Cleanup(func() { _ = s.Close(context.Background()) })

			err = s.push(context.Background(), &request{body: []byte("[]"), measurements: 1, instances: 1})
			require.Error(t, err)
			require.Equal(t, tc.final, export.IsPermanent(err), "%v", err)
			got, ok := export.ThrottleDelay(err)
			require.Equal(t, tc.want > 0, ok, "%v", err)
			require.Equal(t, tc.want, got)
		})
	}
}

// TestConsumeOnlyAggregates: a batch past the period's end makes Consume
// set the period aside, not encode or queue it (which may wait for the
// spool's fsync); shipping is the sink goroutine's job.
func TestConsumeOnlyAggregates(t *testing.T) {
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	now := time.Unix(1600000000, 0)
	env := sinks.Env{Now: func() time.Time { return now }, Tick: time.Hour}.WithDefaults()
	p := &config.Params{Librato: &config.LibratoParams{Token: "test-token-1", Url: srv.URL, Period: time.Second}}
	require.Empty(t, normalize(p.Librato))
	s, err := newSink("test", p.Librato, env, Options{}.withDefaults())
	require.NoError(t, err)
	close(s.stop) // no goroutine ships: what Consume does is all there is
	<-s.stopped
	b, err := s.Bind(&sinks.Metric{Namespace: "istio", Name: "requests", Kind: sinks.Counter})
	require.NoError(t, err)
	batch := func(at time.Time) *sinks.Batch {
		out := &sinks.Batch{Time: at}
		out.Add(b, 1, nil)
		return out
	}
	s.Consume(batch(now))
	s.Consume(batch(now.Add(time.Second))) // the next period
	require.Len(t, s.ended, 1, "the closed period is set aside")
	require.Never(t, func() bool { return posts.Load() > 0 }, 50*time.Millisecond, time.Millisecond, "and neither queued nor sent by Consume")
	s.ship()
	require.Empty(t, s.ended)
	require.Eventually(t, func() bool { return posts.Load() == 1 }, 10*time.Second, time.Millisecond, "shipping encodes and queues it")
	require.NoError(t, s.queue.Close(context.Background()))
}
