package libratotest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
)

func TestFailNextStatuses(t *testing.T) {
	reset := time.Unix(1600000060, 0)
	now := time.Unix(1600000000, 0)
	tests := []struct {
		name       string
		fault      Fault
		wantStatus int
		wantHeader http.Header
		check      func(t *testing.T, body []byte)
	}{
		{
			name: "503", fault: ServiceUnavailable(), wantStatus: 503,
			check: func(t *testing.T, body []byte) {
				var e librato.ErrorResponse
				require.NoError(t, json.Unmarshal(body, &e))
				require.Equal(t, librato.Messages{"Service Unavailable"}, e.Errors.System)
			},
		},
		{name: "500", fault: InternalServerError(), wantStatus: 500},
		{name: "custom", fault: Fault{Status: 502, Body: []byte("bad gateway")}, wantStatus: 502,
			check: func(t *testing.T, body []byte) { require.Equal(t, "bad gateway", string(body)) }},
		{
			name:       "429 with Retry-After and rate-limit header",
			fault:      WithRateLimit(TooManyRequests().WithRetryAfter(1500*time.Millisecond), librato.RateLimit{Limit: 600, Remaining: 0, Reset: reset.Unix()}),
			wantStatus: 429,
			wantHeader: http.Header{"Retry-After": {"2"}, librato.HeaderRateLimitStd: {"limit=600,remaining=0,reset=1600000060"}},
			check: func(t *testing.T, body []byte) {
				require.True(t, librato.IsRateLimitBody(body), string(body))
			},
		},
		{
			name: "429 with Retry-After 0", fault: TooManyRequests().WithRetryAfter(0), wantStatus: 429,
			wantHeader: http.Header{"Retry-After": {"0"}},
		},
		{
			name: "403 rate limit", fault: RateLimitForbidden(), wantStatus: 403,
			check: func(t *testing.T, body []byte) {
				var r librato.RateLimitResponse
				require.NoError(t, json.Unmarshal(body, &r))
				require.Equal(t, now.Unix(), r.RequestTime)
				require.Equal(t, RateLimitError, r.Error)
				require.Contains(t, r.Error, "You have hit the API limit for measurements [measure:raw_rate]")
				require.JSONEq(t, fmt.Sprintf(`{"request_time":%d,"error":%q}`, now.Unix(), RateLimitError), string(body))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, WithClock(func() time.Time { return now }))
			s.FailNext(2, tt.fault)
			require.Equal(t, 2, s.PendingFaults())
			for range 2 {
				resp, body := do(t, s, call{body: oneValid})
				require.Equal(t, tt.wantStatus, resp.StatusCode, string(body))
				for k, v := range tt.wantHeader {
					require.Equal(t, v[0], resp.Header.Get(k), k)
				}
				if tt.check != nil {
					tt.check(t, body)
				}
			}
			require.Empty(t, s.Measurements(), "a failed request must not be recorded")
			last, _ := s.LastRequest()
			require.Equal(t, OutcomeFault, last.Outcome)
			require.Equal(t, tt.wantStatus, last.Status)

			resp, body := do(t, s, call{body: oneValid})
			require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
			require.Equal(t, 1.0, s.Total("m"))
			require.Zero(t, s.PendingFaults())
			require.Equal(t, 2, s.StatusCount(tt.wantStatus))
		})
	}
}

func TestFaultsApplyBeforeAuthAndInOrder(t *testing.T) {
	s := newServer(t)
	s.FailNext(1, ServiceUnavailable())
	s.FailNext(1, InternalServerError())
	resp, _ := do(t, s, call{body: oneValid, noAuth: true})
	require.Equal(t, 503, resp.StatusCode, "an outage hides everything behind it")
	resp, _ = do(t, s, call{path: librato.LegacyMetricsPath, body: `{}`})
	require.Equal(t, 500, resp.StatusCode)
	resp, _ = do(t, s, call{body: oneValid, noAuth: true})
	require.Equal(t, 401, resp.StatusCode)
}

func TestFaultHeadersAreNotShared(t *testing.T) {
	base := TooManyRequests().WithRetryAfter(time.Second)
	derived := WithRateLimit(base, librato.RateLimit{Limit: 1})
	require.Empty(t, base.Header.Get(librato.HeaderRateLimitStd))
	require.Equal(t, "1", derived.Header.Get("Retry-After"))
}

func TestConnectionReset(t *testing.T) {
	s := newServer(t)
	s.FailNext(1, ConnectionReset())
	_, _, err := send(s, call{body: oneValid})
	require.Error(t, err)
	require.Empty(t, s.Measurements())
	st := s.Stats()
	require.Equal(t, 1, st.Resets)
	require.Empty(t, st.ByStatus)
	last, _ := s.LastRequest()
	require.Equal(t, OutcomeReset, last.Outcome)
	require.Zero(t, last.Status)
	require.Equal(t, oneValid, string(last.RawBody), "the request was read before the reset")

	resp, _ := do(t, s, call{body: oneValid})
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
}

// statuses sends n requests one after another and returns their statuses.
func statuses(t *testing.T, s *Server, n int) []int {
	t.Helper()
	out := make([]int, n)
	for i := range out {
		resp, _ := do(t, s, call{body: oneValid})
		out[i] = resp.StatusCode
	}
	return out
}

func TestFailRandomlyIsSeeded(t *testing.T) {
	run := func(seed uint64) []int {
		s := newServer(t, WithSeed(seed))
		s.FailRandomly(0.3, ServiceUnavailable())
		got := statuses(t, s, 200)
		failed := 0
		for _, st := range got {
			if st == 503 {
				failed++
			}
		}
		require.InDelta(t, 60, failed, 25, "about p of the requests fail")
		require.Equal(t, 200-failed, s.Stats().Accepted, "only the successes are recorded")
		return got
	}
	a, b, c := run(7), run(7), run(8)
	require.Equal(t, a, b, "same seed, same failures")
	require.NotEqual(t, a, c)

	s := newServer(t)
	s.FailRandomly(1, InternalServerError())
	s.FailNext(1, TooManyRequests())
	require.Equal(t, []int{429, 500, 500}, statuses(t, s, 3), "queued faults come first")
	s.FailRandomly(0, Fault{})
	require.Equal(t, []int{202, 202}, statuses(t, s, 2))
}

func TestLatency(t *testing.T) {
	s := newServer(t)
	s.SetLatency(30 * time.Millisecond)
	start := time.Now()
	resp, _ := do(t, s, call{body: oneValid})
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.GreaterOrEqual(t, time.Since(start), 30*time.Millisecond)

	// A client that gives up must not have its request recorded: it will
	// send it again.
	s.SetLatency(time.Second)
	_, _, err := send(s, call{body: oneValid, timeout: 20 * time.Millisecond})
	require.Error(t, err)
	require.Eventually(t, func() bool { return s.Stats().Abandoned == 1 }, time.Second, 2*time.Millisecond)
	require.Len(t, s.Measurements(), 1)
	last, _ := s.LastRequest()
	require.Equal(t, OutcomeAbandoned, last.Outcome)

	s.SetLatency(0)
	start = time.Now()
	resp, _ = do(t, s, call{body: oneValid})
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Less(t, time.Since(start), time.Second)
}

func TestGoDownForAWindow(t *testing.T) {
	s := newServer(t)
	s.GoDown(150 * time.Millisecond)
	require.True(t, s.IsDown())
	_, _, err := send(s, call{body: oneValid})
	require.Error(t, err)

	require.Eventually(t, func() bool { return !s.IsDown() }, 2*time.Second, 5*time.Millisecond)
	resp, _ := do(t, s, call{body: oneValid})
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Len(t, s.Measurements(), 1)
}

func TestGoDownUntilUp(t *testing.T) {
	s := newServer(t)
	resp, _ := do(t, s, call{body: oneValid}) // leaves a keep-alive connection
	require.Equal(t, http.StatusAccepted, resp.StatusCode)

	s.GoDown(0)
	require.True(t, s.IsDown())
	// The first request reuses the open connection and is reset by the
	// handler; the next ones open new connections, reset on accept.
	for range 3 {
		_, _, err := send(s, call{body: oneValid})
		require.Error(t, err)
	}
	st := s.Stats()
	require.Equal(t, 1, st.Resets)
	require.Equal(t, 2, st.Refused)
	require.Len(t, s.Measurements(), 1)

	s.Up()
	require.False(t, s.IsDown())
	resp, _ = do(t, s, call{body: oneValid})
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Len(t, s.Measurements(), 1, "the same series and time: one value, as the service keeps")
	require.Equal(t, 1, s.Stats().Overwritten)
	require.Zero(t, s.Stats().Conflicts, "the same value")
}

func TestGoingDownResetsRequestsInFlight(t *testing.T) {
	s := newServer(t)
	s.SetLatency(time.Minute)
	errc := make(chan error, 1)
	go func() {
		_, _, err := send(s, call{body: oneValid})
		errc <- err
	}()
	require.Eventually(t, func() bool { return s.Stats().Requests == 1 }, time.Second, time.Millisecond)
	start := time.Now()
	s.GoDown(0)
	require.Error(t, <-errc)
	require.Less(t, time.Since(start), 10*time.Second, "the request dies with the server, not after the delay")
	require.Empty(t, s.Measurements())
	require.Equal(t, 1, s.Stats().Resets)
}

func TestSetRateLimitHeaderOnEveryResponse(t *testing.T) {
	s := newServer(t)
	rl := librato.RateLimit{Limit: 600000, Remaining: 599998, Reset: 1531370400}
	s.SetRateLimit(&rl)
	rl.Remaining = 0 // the server keeps its own copy

	s.FailNext(1, ServiceUnavailable())
	s.FailNext(1, WithRateLimit(TooManyRequests(), librato.RateLimit{Limit: 600000, Reset: 1531370400}))
	want := []struct {
		c      call
		status int
		header string
	}{
		{call{body: oneValid}, 503, "limit=600000,remaining=599998,reset=1531370400"},
		{call{body: oneValid}, 429, "limit=600000,remaining=0,reset=1531370400"},
		{call{body: oneValid}, 202, "limit=600000,remaining=599998,reset=1531370400"},
		{call{body: "{"}, 400, "limit=600000,remaining=599998,reset=1531370400"},
	}
	for _, w := range want {
		resp, _ := do(t, s, w.c)
		require.Equal(t, w.status, resp.StatusCode)
		got, err := librato.ParseRateLimit(resp.Header.Get(librato.HeaderRateLimitStd))
		require.NoError(t, err)
		require.Equal(t, w.header, got.String())
	}
	s.SetRateLimit(nil)
	resp, _ := do(t, s, call{body: oneValid})
	require.Empty(t, resp.Header.Get(librato.HeaderRateLimitStd))
}

func TestClearFaults(t *testing.T) {
	s := newServer(t)
	s.FailNext(5, ServiceUnavailable())
	s.FailRandomly(1, InternalServerError())
	s.SetLatency(time.Minute)
	s.GoDown(time.Minute)
	s.ClearFaults()
	require.Zero(t, s.PendingFaults())
	require.False(t, s.IsDown())
	require.Equal(t, []int{202, 202}, statuses(t, s, 2))
}

// TestConcurrentFaultsReconcile drives the server from several goroutines
// while faults change, and checks that what was recorded is exactly what the
// clients saw accepted.
func TestConcurrentFaultsReconcile(t *testing.T) {
	s := newServer(t, WithSeed(42))
	s.FailRandomly(0.3, ServiceUnavailable())
	const workers, perWorker = 4, 25
	var mu sync.Mutex
	seen := map[int]int{}
	var transportErrs int
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				body := fmt.Sprintf(`{"tags":{"w":"%d"},"measurements":[{"name":"m","value":1},{"name":"m","value":2}]}`, w)
				resp, _, err := send(s, call{body: body})
				mu.Lock()
				if err != nil {
					transportErrs++
				} else {
					seen[resp.StatusCode]++
				}
				mu.Unlock()
				if i%10 == 0 {
					s.FailNext(1, ConnectionReset())
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			s.SetLatency(time.Millisecond)
			s.FailNext(1, TooManyRequests())
			_ = s.Requests()
			_ = s.Total("m")
			s.SetLatency(0)
		}
	})
	wg.Wait()

	st := s.Stats()
	require.Equal(t, workers*perWorker, st.Requests)
	require.Equal(t, seen, st.ByStatus)
	require.Equal(t, transportErrs, st.Resets)
	require.Equal(t, 2*seen[202], st.Accepted)
	require.Equal(t, 3.0*float64(seen[202]), s.Total("m"))
	require.Positive(t, seen[202])
	require.Positive(t, seen[503])
}
