package librato_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato/libratotest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// traffic is what a test sent, to reconcile with what the fake received.
type traffic struct {
	requests     float64 // sum of the COUNTER's instance values
	requestsN    int     // COUNTER instances
	latencySum   float64 // sum of the DISTRIBUTION's values, in ms
	latencyCount int64
}

// drive sends periods × calls HandleMetric requests of perCall instances of
// each metric over series paths, moving the clock one period after each
// period's calls. Values are integers and multiples of 125 ms, which float64
// adds exactly in any order, so totals can be compared with ==.
func (h *harness) drive(cfg *config.LibratoParams, periods, calls, perCall, paths int, seed uint64) traffic {
	h.t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed))
	anyCfg := h.params(cfg, requestsMetric, latencyMetric, inflightMetric)
	var tr traffic
	for p := 0; p < periods; p++ {
		for c := 0; c < calls; c++ {
			var ins []*metricpb.InstanceMsg
			for i := 0; i < perCall; i++ {
				path := mt.Str(fmt.Sprintf("/api/%d", rng.IntN(paths)))
				n := int64(rng.IntN(5) + 1)
				lat := time.Duration(rng.IntN(40)+1) * 125 * time.Millisecond
				ins = append(ins,
					mt.Instance("requestcount.instance.istio-system", mt.Int(n), "path", path, "code", mt.Int(200)),
					mt.Instance("latency.instance.istio-system", mt.Duration(lat), "path", path),
					mt.Instance("inflight.instance.istio-system", mt.Int(n), "path", path))
				tr.requests += float64(n)
				tr.requestsN++
				tr.latencySum += float64(lat / time.Millisecond)
				tr.latencyCount++
			}
			h.handle(anyCfg, ins...)
		}
		h.advance(cfg.Period)
	}
	return tr
}

func TestTotalsReconcileExactly(t *testing.T) {
	tests := []struct {
		name   string
		server []libratotest.Option
		faults func(h *harness)
		// check asserts the fault really happened.
		check func(t *testing.T, h *harness)
	}{
		{
			name: "normal operation",
			check: func(t *testing.T, h *harness) {
				require.Zero(t, h.sends(librato.ResultRetry))
			},
		},
		{
			name:   "30% of requests answered 503",
			server: []libratotest.Option{libratotest.WithSeed(7)},
			faults: func(h *harness) { h.srv.FailRandomly(0.3, libratotest.ServiceUnavailable()) },
			check: func(t *testing.T, h *harness) {
				require.Positive(t, h.srv.StatusCount(http.StatusServiceUnavailable))
				require.Equal(t, float64(h.srv.StatusCount(http.StatusServiceUnavailable)), h.sends(librato.ResultRetry))
			},
		},
		{
			name: "429 storm with Retry-After, rate-limit headers and rate-limit 403s",
			faults: func(h *harness) {
				exhausted := librato.RateLimit{Limit: 600, Remaining: 0, Reset: h.clock.Now().Unix()}
				h.srv.FailNext(8, libratotest.TooManyRequests().WithRetryAfter(0))
				h.srv.FailNext(4, libratotest.RateLimitForbidden())
				h.srv.FailNext(4, libratotest.WithRateLimit(libratotest.TooManyRequests(), exhausted)) // reset already passed: backoff
				h.srv.FailNext(1, libratotest.TooManyRequests().WithRetryAfter(time.Second))
			},
			check: func(t *testing.T, h *harness) {
				require.Equal(t, 13, h.srv.StatusCount(http.StatusTooManyRequests))
				require.Equal(t, 4, h.srv.StatusCount(http.StatusForbidden))
				require.Zero(t, h.srv.PendingFaults())
			},
		},
		{
			name: "outage spanning many retry cycles",
			faults: func(h *harness) {
				h.srv.GoDown(700 * time.Millisecond)
			},
			check: func(t *testing.T, h *harness) {
				st := h.srv.Stats()
				require.Greater(t, st.Refused+st.Resets, 10, "the sink kept retrying through the outage")
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessConfig{server: tc.server})
			if tc.faults != nil {
				tc.faults(h)
			}
			tr := h.drive(h.librato(), 5, 8, 25, 20, 42)
			h.flush()

			require.Equal(t, tr.requests, h.srv.Total("istio.requests"), "COUNTER: sum of instance values sent == received")
			require.Equal(t, tr.latencySum, h.srv.Total("istio.latency"), "DISTRIBUTION: sums in ms")
			require.Equal(t, tr.latencyCount, h.srv.Count("istio.latency"), "DISTRIBUTION: counts are instances")
			require.Zero(t, h.droppedTotal(), "nothing dropped")
			require.Zero(t, h.sends(librato.ResultRejected))
			require.Positive(t, h.sends(librato.ResultOK))
			if tc.check != nil {
				tc.check(t, h)
			}
		})
	}
}

func TestDropCountersAreExactWhenTheSendQueueOverflows(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.srv.GoDown(0)
	cfg := h.librato(func(l *config.LibratoParams) { l.QueueSize = 4 })
	anyCfg := h.params(cfg, requestsMetric)
	sent := 0
	for p := 0; p < 8; p++ {
		for i := 0; i < 3; i++ {
			for j := 0; j <= p; j++ { // a different number of instances per series and period
				h.handle(anyCfg, mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str(fmt.Sprint("/", i))))
				sent++
			}
		}
		h.waitConsumed()
		h.advance(time.Second)
		// Wait for the close: 3 measurements queued or sent per period.
		require.Eventually(t, func() bool {
			return h.dropped(telemetry.DropSendQueueFull) >= float64(expectedDropsBefore(p))
		}, 10*time.Second, time.Millisecond, "period %d", p)
	}
	h.srv.Up()
	h.flush()

	received := h.srv.Total("istio.requests")
	require.Positive(t, h.dropped(telemetry.DropSendQueueFull))
	require.Equal(t, float64(sent), received+h.dropped(telemetry.DropSendQueueFull),
		"instances sent == received + dropped")
	require.Equal(t, h.dropped(telemetry.DropSendQueueFull), h.droppedTotal(), "no other reason")
}

// expectedDropsBefore is a lower bound of the instances dropped once period
// p has closed: a queue of 4 measurements holds one request of 3 and the two
// workers of the tagged API hold one each, so every earlier period but three
// has been pushed out. Period q carries 3×(q+1) instances.
func expectedDropsBefore(p int) int {
	n := 0
	for q := 0; q < p-2; q++ {
		n += 3 * (q + 1)
	}
	return n
}

func TestShutdownTimeoutDropsAreCounted(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.srv.GoDown(0)
	anyCfg := h.params(h.librato(), requestsMetric)
	for i := 0; i < 10; i++ {
		h.handle(anyCfg, mt.Instance("requestcount.instance.istio-system", mt.Int(2), "path", mt.Str(fmt.Sprint("/", i%3))))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.Error(t, h.set.Close(ctx), "the backend is down: Close reports what it could not send")
	require.Equal(t, 10.0, h.dropped(telemetry.DropShutdown), "every instance, in flight or queued, counted")
	require.Zero(t, h.srv.Stats().Accepted)
}

func TestCloseSendsTheOpenPeriod(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	anyCfg := h.params(h.librato(func(l *config.LibratoParams) { l.Period = time.Minute }), requestsMetric)
	h.handle(anyCfg, mt.Instance("requestcount.instance.istio-system", mt.Int(3)), mt.Instance("requestcount.instance.istio-system", mt.Int(4)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.set.Close(ctx))
	require.Equal(t, 7.0, h.srv.Total("istio.requests"))
	points := h.srv.Measurements()
	require.Len(t, points, 1)
	require.Equal(t, start.Unix(), points[0].Time, "stamped with the period's start")
	require.Equal(t, int64(60), points[0].Period)
}

func TestBackendRejectionsAreDroppedCountedAndLoggedOnce(t *testing.T) {
	h := newHarness(t, harnessConfig{server: []libratotest.Option{libratotest.WithMaxMeasurements(1)}})
	anyCfg := h.params(h.librato(), requestsMetric)
	for p := 0; p < 3; p++ {
		h.handle(anyCfg, mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str("/a")),
			mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str("/b")))
		h.flush()
	}
	require.Equal(t, 6.0, h.dropped(telemetry.DropBackendRejected), "2 measurements × 3 requests, 1 instance each")
	require.Equal(t, 3.0, h.sends(librato.ResultRejected))
	require.Zero(t, h.sends(librato.ResultRetry), "a 400 is not retried")
	require.Equal(t, 1, countLines(h.logs.String(), "more than the limit of 1"), "the error body is logged once")
}

func TestPartialFailureIn2xxBodyIsLoggedAndCounted(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	h.srv.FailNext(1, libratotest.Fault{Status: http.StatusAccepted,
		Body: []byte(`{"measurements":{"summary":{"total":2,"accepted":1,"failed":1,"filtered":0}}}`)})
	anyCfg := h.params(h.librato(), requestsMetric)
	h.handle(anyCfg, mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str("/a")),
		mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str("/b")))
	h.flush()
	require.Equal(t, 1.0, h.sends(librato.ResultPartial))
	require.Contains(t, h.logs.String(), "reports failed measurements")
	require.Contains(t, h.logs.String(), `failed=1`)
}
