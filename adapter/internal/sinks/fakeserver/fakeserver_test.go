package fakeserver_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/fakeserver"
)

// start serves 204 through an injector: a fake in its simplest form.
func start(t *testing.T, seed uint64) (*fakeserver.Injector, string) {
	t.Helper()
	in := fakeserver.New(seed)
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		f, out := in.Intercept(w, r)
		switch out {
		case fakeserver.Faulted:
			for k, v := range f.Header {
				w.Header()[k] = v
			}
			w.WriteHeader(f.Status)
			_, _ = w.Write(f.Body)
		case fakeserver.Proceed:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	ts.Listener = in.Listener(ts.Listener)
	ts.Start()
	t.Cleanup(func() { in.Close(); ts.Close() })
	return in, ts.URL
}

func post(url string, timeout time.Duration) (int, http.Header, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, resp.Header, nil
}

func TestQueuedFaultsComeFirstAndInOrder(t *testing.T) {
	in, url := start(t, 1)
	in.FailNext(1, fakeserver.Fault{Status: 503})
	in.FailNext(1, fakeserver.Fault{Status: 429}.WithRetryAfter(1500*time.Millisecond))
	in.FailNext(1, fakeserver.ConnectionReset())
	require.Equal(t, 3, in.PendingFaults())
	code, _, err := post(url, time.Second)
	require.NoError(t, err)
	require.Equal(t, 503, code)
	code, h, err := post(url, time.Second)
	require.NoError(t, err)
	require.Equal(t, 429, code)
	require.Equal(t, "2", h.Get("Retry-After"), "rounded up to whole seconds")
	_, _, err = post(url, time.Second)
	require.Error(t, err, "reset without an answer")
	code, _, err = post(url, time.Second)
	require.NoError(t, err)
	require.Equal(t, 204, code)
	require.Equal(t, fakeserver.Stats{Resets: 1}, in.Stats())
}

func TestRandomFaultsFollowTheSeed(t *testing.T) {
	run := func() []int {
		in, url := start(t, 42)
		in.FailRandomly(0.5, fakeserver.Fault{Status: 500})
		var codes []int
		for range 20 {
			code, _, err := post(url, time.Second)
			require.NoError(t, err)
			codes = append(codes, code)
		}
		return codes
	}
	first := run()
	require.Equal(t, first, run(), "the same seed fails the same requests")
	require.Contains(t, first, 500)
	require.Contains(t, first, 204)
}

func TestLatencyDownWindowsAndClearing(t *testing.T) {
	in, url := start(t, 1)
	in.SetLatency(time.Second)
	_, _, err := post(url, 50*time.Millisecond)
	require.Error(t, err)
	require.Eventually(t, func() bool { return in.Stats().Abandoned == 1 }, 5*time.Second, time.Millisecond,
		"a client that gives up during the latency is not answered")

	in.SetLatency(0)
	in.GoDown(0)
	require.True(t, in.IsDown())
	_, _, err = post(url, time.Second)
	require.Error(t, err)
	require.Positive(t, in.Stats().Refused, "connections are reset on accept while down")
	in.Up()
	code, _, err := post(url, time.Second)
	require.NoError(t, err)
	require.Equal(t, 204, code)

	in.FailNext(5, fakeserver.Fault{Status: 500})
	in.GoDown(time.Hour)
	in.ClearFaults()
	require.False(t, in.IsDown())
	require.Zero(t, in.PendingFaults())
}
