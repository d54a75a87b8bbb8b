package export_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
)

type req struct {
	id        int
	units     int
	instances int
}

func (r req) Units() int     { return r.units }
func (r req) Instances() int { return r.instances }

func TestQueueDropsOldestWhenFull(t *testing.T) {
	release := make(chan struct{})
	var sent []int
	var mu sync.Mutex
	dropped := map[string][]int{}
	var droppedInstances atomic.Int64
	first := make(chan struct{})
	var once sync.Once
	q := export.NewQueue(func(ctx context.Context, r req) error {
		once.Do(func() { close(first) })
		<-release
		mu.Lock()
		sent = append(sent, r.id)
		mu.Unlock()
		return nil
	}, export.QueueOptions{Capacity: 10, Workers: 1, MaxElapsed: time.Minute,
		OnDrop: func(reason string, units, instances int, err error) {
			mu.Lock()
			dropped[reason] = append(dropped[reason], units)
			mu.Unlock()
			droppedInstances.Add(int64(instances))
		}})

	q.Put(req{id: 0, units: 4, instances: 40})
	<-first // request 0 is being sent, not queued
	for i := 1; i <= 4; i++ {
		q.Put(req{id: i, units: 4, instances: 40})
	}
	q.Put(req{id: 99, units: 11, instances: 110}) // larger than the queue
	require.Equal(t, 8, q.Units(), "requests 3 and 4 remain")
	close(release)
	require.NoError(t, q.Close(context.Background()))
	require.Equal(t, []int{0, 3, 4}, sent)
	require.Equal(t, map[string][]int{export.DropOverflow: {4, 4, 11}}, dropped)
	require.Equal(t, int64(190), droppedInstances.Load())
}

func TestQueueClassifiesFailures(t *testing.T) {
	var mu sync.Mutex
	dropped := map[string]int{}
	q := export.NewQueue(func(ctx context.Context, r req) error {
		switch r.id {
		case 1:
			return export.Permanent(errors.New("400 bad name"))
		case 2:
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}, export.QueueOptions{Capacity: 100, MaxElapsed: 50 * time.Millisecond,
		OnDrop: func(reason string, units, instances int, err error) {
			mu.Lock()
			dropped[reason] += instances
			mu.Unlock()
		}})
	q.Put(req{id: 1, units: 1, instances: 3})
	q.Put(req{id: 2, units: 1, instances: 5})
	q.Put(req{id: 3, units: 1, instances: 7})
	require.NoError(t, q.Drain(context.Background()))
	require.NoError(t, q.Close(context.Background()))
	require.Equal(t, map[string]int{export.DropRejected: 3, export.DropExhausted: 5}, dropped)
}

func TestQueueCloseDropsWhatCannotBeSent(t *testing.T) {
	var shutdown atomic.Int64
	q := export.NewQueue(func(ctx context.Context, r req) error {
		<-ctx.Done() // backend hangs
		return ctx.Err()
	}, export.QueueOptions{Capacity: 100, MaxElapsed: time.Hour,
		OnDrop: func(reason string, units, instances int, err error) {
			if reason == export.DropShutdown {
				shutdown.Add(int64(instances))
			}
		}})
	for i := 0; i < 3; i++ {
		q.Put(req{id: i, units: 1, instances: 10})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, q.Close(ctx), context.DeadlineExceeded)
	require.Equal(t, int64(30), shutdown.Load(), "in-flight and queued requests are counted as dropped at shutdown")
	q.Put(req{id: 9, units: 1, instances: 1})
	require.Equal(t, int64(31), shutdown.Load())
}

func newClient(extra func(*http.Response, []byte) bool) *retryablehttp.Client {
	return export.NewHTTPClient(export.RetryOptions{Timeout: time.Second, MinBackoff: time.Millisecond,
		MaxBackoff: 5 * time.Millisecond, RetryableStatus: extra,
		ServerWait: func(resp *http.Response) (time.Duration, bool) {
			if v := resp.Header.Get("X-Wait-Ms"); v != "" {
				var ms int
				_, _ = fmt.Sscan(v, &ms)
				return time.Duration(ms) * time.Millisecond, true
			}
			return 0, false
		}})
}

func TestRetryPolicy(t *testing.T) {
	tests := []struct {
		name     string
		statuses []int
		header   http.Header
		body     string
		extra    func(*http.Response, []byte) bool
		want     int
		attempts int
	}{
		{"503 then ok", []int{503, 503, 200}, nil, "", nil, 200, 3},
		{"429 then ok", []int{429, 202}, nil, "", nil, 202, 2},
		{"400 is final", []int{400, 200}, nil, `{"errors":{}}`, nil, 400, 1},
		{"401 is final", []int{401, 200}, nil, "", nil, 401, 1},
		{"501 is final", []int{501, 200}, nil, "", nil, 501, 1},
		{"403 rate limit is retried", []int{403, 200}, nil, `{"error":"You have hit the API limit"}`,
			func(r *http.Response, b []byte) bool {
				return r.StatusCode == 403 && strings.Contains(string(b), "API limit")
			}, 200, 2},
		{"403 otherwise final", []int{403, 200}, nil, `{"error":"forbidden"}`,
			func(r *http.Response, b []byte) bool {
				return r.StatusCode == 403 && strings.Contains(string(b), "API limit")
			}, 403, 1},
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
			r, err := retryablehttp.NewRequest(http.MethodPost, srv.URL, []byte("payload"))
			require.NoError(t, err)
			resp, err := newClient(tc.extra).Do(r)
			require.NoError(t, err)
			require.Equal(t, tc.want, resp.StatusCode)
			require.Equal(t, tc.body, export.ReadBody(resp, 1<<10), "the caller sees the whole body")
			require.EqualValues(t, tc.attempts, n.Load())
		})
	}
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
	r, err := retryablehttp.NewRequest(http.MethodPost, srv.URL, []byte("x"))
	require.NoError(t, err)
	resp, err := newClient(nil).Do(r)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
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
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, srv.URL, []byte("x"))
	require.NoError(t, err)
	start := time.Now()
	_, err = newClient(nil).Do(r)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), time.Second)
	require.Greater(t, n.Load(), int32(3), "retried with backoff until the deadline")
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
	r, err := retryablehttp.NewRequest(http.MethodPost, srv.URL, []byte("x"))
	require.NoError(t, err)
	resp, err := newClient(nil).Do(r)
	require.NoError(t, err)
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.EqualValues(t, 2, n.Load())
}
