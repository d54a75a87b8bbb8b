package librato

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/config"
)

func TestRateLimitWait(t *testing.T) {
	now := time.Unix(1600000000, 0)
	s := &Sink{env: envDefaults(sinks.Env{Now: func() time.Time { return now }})}
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
	s := &Sink{env: envDefaults(sinks.Env{Now: func() time.Time { return now }})}
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
	ts, err := newTokenSource(&config.LibratoParams{TokenPath: path}, secrets)
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
	_, err := newTokenSource(&config.LibratoParams{TokenPath: filepath.Join(t.TempDir(), "absent")}, &logging.Secrets{})
	require.ErrorIs(t, err, errNoToken)
	_, err = newTokenSource(&config.LibratoParams{TokenEnv: "MESHMETRICS_TEST_EMPTY"}, &logging.Secrets{})
	require.ErrorContains(t, err, "MESHMETRICS_TEST_EMPTY")
}

// TestClientBackoffHonoursTheServer checks the client's wiring: the wait
// before a retry is the server's when it names one, else exponential.
func TestClientBackoffHonoursTheServer(t *testing.T) {
	now := time.Unix(1600000000, 0)
	env := envDefaults(sinks.Env{Now: func() time.Time { return now }})
	p, err := config.Normalize(&config.Params{Librato: &config.LibratoParams{Token: "test-token-1"}})
	require.NoError(t, err)
	s, err := newSink("test", p.Librato, env, Options{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}.withDefaults())
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close(context.Background()) })

	resp := func(status int, kv ...string) *http.Response {
		r := &http.Response{StatusCode: status, Header: http.Header{}}
		for i := 0; i < len(kv); i += 2 {
			r.Header.Set(kv[i], kv[i+1])
		}
		return r
	}
	exhausted := "limit=600,remaining=0,reset=1600000042"
	tests := []struct {
		name string
		resp *http.Response
		want time.Duration // exact, or 0 for "exponential, at most MaxBackoff"
	}{
		{name: "429 with Retry-After", resp: resp(429, "Retry-After", "7"), want: 7 * time.Second},
		{name: "429 with an exhausted rate limit", resp: resp(429, HeaderRateLimitStd, exhausted), want: 42 * time.Second},
		{name: "rate-limit 403", resp: resp(403, HeaderRateLimitAgg, exhausted), want: 42 * time.Second},
		{name: "503 ignores the rate-limit reset", resp: resp(503, HeaderRateLimitStd, exhausted)},
		{name: "network error", resp: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := s.client.Backoff(s.client.RetryWaitMin, s.client.RetryWaitMax, 3, tc.resp)
			if tc.want > 0 {
				require.Equal(t, tc.want, got)
				return
			}
			require.LessOrEqual(t, got, 10*time.Millisecond)
			require.Positive(t, got)
		})
	}
}
