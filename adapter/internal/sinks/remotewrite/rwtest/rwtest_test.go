package rwtest_test

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/prompb"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/rwtest"
)

func ts(name string, samples ...prompb.Sample) prompb.TimeSeries {
	return prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: name}, {Name: "job", Value: "j"}}, Samples: samples}
}

func smp(t int64, v float64) prompb.Sample { return prompb.Sample{Timestamp: t, Value: v} }

func post(t *testing.T, url string, body []byte, h http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	req.Header.Set("User-Agent", "test")
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func encode(t *testing.T, series ...prompb.TimeSeries) []byte {
	t.Helper()
	raw, err := (&prompb.WriteRequest{Timeseries: series}).Marshal()
	require.NoError(t, err)
	return snappy.Encode(nil, raw)
}

// TestAnswersAsPrometheus242 runs a first request that stores a series at
// t=1000 (value 1), then the request under test.
func TestAnswersAsPrometheus242(t *testing.T) {
	stale := math.Float64frombits(rwtest.StaleNaN)
	tests := []struct {
		name      string
		body      func(t *testing.T) []byte
		status    int
		violation string
		stored    []prompb.Sample // of up{job="j"} afterwards
	}{
		{"newer sample", func(t *testing.T) []byte { return encode(t, ts("up", smp(2000, 2))) }, 204, "",
			[]prompb.Sample{smp(1000, 1), smp(2000, 2)}},
		{"exact duplicate accepted, not stored again", func(t *testing.T) []byte { return encode(t, ts("up", smp(1000, 1))) }, 204, "",
			[]prompb.Sample{smp(1000, 1)}},
		{"same time, other value", func(t *testing.T) []byte { return encode(t, ts("up", smp(1000, 5))) }, 400, "",
			[]prompb.Sample{smp(1000, 1)}},
		{"out of order rolls back the whole request", func(t *testing.T) []byte {
			return encode(t, ts("other", smp(5000, 1)), ts("up", smp(999, 1)))
		}, 400, "", []prompb.Sample{smp(1000, 1)}},
		{"out of order within a request", func(t *testing.T) []byte { return encode(t, ts("up", smp(3000, 1), smp(2000, 1))) }, 400, "",
			[]prompb.Sample{smp(1000, 1)}},
		{"out of bounds", func(t *testing.T) []byte {
			return encode(t, ts("old", smp(1000-time.Hour.Milliseconds()-1, 1)))
		}, 400, "", []prompb.Sample{smp(1000, 1)}},
		{"stale marker", func(t *testing.T) []byte { return encode(t, ts("up", smp(1001, stale))) }, 204, "",
			[]prompb.Sample{smp(1000, 1), smp(1001, stale)}},
		{"not snappy", func(*testing.T) []byte { return []byte("plain") }, 400, "", []prompb.Sample{smp(1000, 1)}},
		{"not a WriteRequest", func(*testing.T) []byte { return snappy.Encode(nil, []byte{0xff, 0xff}) }, 400, "", []prompb.Sample{smp(1000, 1)}},
		{"unsorted labels", func(t *testing.T) []byte {
			return encode(t, prompb.TimeSeries{Labels: []prompb.Label{{Name: "z", Value: "1"}, {Name: "__name__", Value: "up"}}, Samples: []prompb.Sample{smp(2000, 1)}})
		}, 500, "labels not sorted", []prompb.Sample{smp(1000, 1)}},
		{"empty label value", func(t *testing.T) []byte {
			return encode(t, prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "a", Value: ""}}, Samples: []prompb.Sample{smp(2000, 1)}})
		}, 500, "empty label", []prompb.Sample{smp(1000, 1)}},
		{"no name", func(t *testing.T) []byte {
			return encode(t, prompb.TimeSeries{Labels: []prompb.Label{{Name: "a", Value: "b"}}, Samples: []prompb.Sample{smp(2000, 1)}})
		}, 500, "no __name__", []prompb.Sample{smp(1000, 1)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := rwtest.New()
			defer s.Close()
			status, _ := post(t, s.URL(), encode(t, ts("up", smp(1000, 1))), nil)
			require.Equal(t, 204, status)
			status, _ = post(t, s.URL(), tc.body(t), nil)
			require.Equal(t, tc.status, status)
			got := s.Samples()[`up{job="j"}`]
			require.Len(t, got, len(tc.stored))
			for i := range got {
				require.Equal(t, tc.stored[i].Timestamp, got[i].Timestamp)
				require.Equal(t, math.Float64bits(tc.stored[i].Value), math.Float64bits(got[i].Value))
			}
			if tc.violation == "" {
				require.Empty(t, s.Violations())
			} else {
				require.Len(t, s.Violations(), 1)
				require.Contains(t, s.Violations()[0], tc.violation)
			}
		})
	}
}

func TestHeadersAuthAndFaults(t *testing.T) {
	s := rwtest.New(rwtest.WithBearerToken("tok-123"))
	defer s.Close()
	body := encode(t, ts("up", smp(1000, 1)))
	status, _ := post(t, s.URL(), body, nil)
	require.Equal(t, http.StatusUnauthorized, status)
	auth := http.Header{"Authorization": {"Bearer tok-123"}}

	s.FailNext(1, rwtest.TooManyRequests().WithRetryAfter(1500*time.Millisecond))
	s.FailNext(1, rwtest.ServiceUnavailable())
	req, _ := http.NewRequest(http.MethodPost, s.URL(), bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 429, resp.StatusCode)
	require.Equal(t, "2", resp.Header.Get("Retry-After"))
	status, _ = post(t, s.URL(), body, auth)
	require.Equal(t, 503, status)
	s.FailNext(1, rwtest.ConnectionReset())
	_, err = http.Post(s.URL(), "application/x-protobuf", bytes.NewReader(body))
	require.Error(t, err, "reset without an answer")
	require.Equal(t, 0, s.Stats().Samples, "faults store nothing")

	s.GoDown(0)
	_, err = http.Post(s.URL(), "application/x-protobuf", bytes.NewReader(body))
	require.Error(t, err)
	s.Up()
	status, _ = post(t, s.URL(), body, auth)
	require.Equal(t, 204, status)
	st := s.Stats()
	require.Equal(t, 1, st.Samples)
	require.GreaterOrEqual(t, st.Refused, 1)
	require.Equal(t, 1.0, s.Total("up"))
	require.Empty(t, s.Violations(), "the requests built by post carry the protocol headers")

	// A bare POST lacks them: recorded, not refused (2.42 ignores them).
	resp, err = http.Post(s.URL(), "application/x-protobuf", bytes.NewReader(encode(t, ts("up", smp(2000, 2)))))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

func TestLatencyAbandonedRequestsStoreNothing(t *testing.T) {
	s := rwtest.New()
	defer s.Close()
	s.SetLatency(200 * time.Millisecond)
	c := &http.Client{Timeout: 20 * time.Millisecond}
	req, _ := http.NewRequest(http.MethodPost, s.URL(), bytes.NewReader(encode(t, ts("up", smp(1000, 1)))))
	_, err := c.Do(req)
	require.Error(t, err)
	require.Eventually(t, func() bool { return s.Stats().Abandoned == 1 }, 5*time.Second, time.Millisecond)
	require.Equal(t, 0, s.Stats().Samples)
}

// TestARequestSentAgainIsCountedApart: a request stored and sent again (its
// answer was lost) is accepted and stores nothing, as Prometheus does with
// identical samples; the fake counts it apart, so that a test can tell the
// samples a client produced from those it sent twice.
func TestARequestSentAgainIsCountedApart(t *testing.T) {
	s := rwtest.New()
	defer s.Close()
	// One sample per series, as a remote-write push carries: sent again,
	// each is an exact duplicate of its series' latest.
	first := encode(t, ts("up", smp(1000, 1)), ts("other", smp(1000, 2)))
	for range 3 {
		status, _ := post(t, s.URL(), first, nil)
		require.Equal(t, 204, status)
	}
	// The same sample in another request: produced twice, not re-sent.
	status, _ := post(t, s.URL(), encode(t, ts("up", smp(1000, 1))), nil)
	require.Equal(t, 204, status)
	st := s.Stats()
	require.Equal(t, 2, st.Samples)
	require.Equal(t, 5, st.Duplicates)
	require.Equal(t, 2, st.Resent)
	require.Equal(t, 4, st.ResentSamples)
	require.Len(t, s.Samples()[`up{job="j"}`], 1)
}
