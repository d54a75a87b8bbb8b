package faults_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato/libratotest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp/otlptest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/rwtest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// Traffic of a scenario: rounds of calls, each round ending in a flush.
const (
	rounds  = 3
	workers = 4
	calls   = 5
	perCall = 20
	paths   = 10
)

// scenario is one fault, run against each backend.
type scenario struct {
	name       string
	maxElapsed time.Duration
	timeout    time.Duration
	spool      bool
	// fault starts the fault before the traffic; heal ends it after
	// round healAfter (default: never; the fake heals itself).
	fault     func(h *harness)
	heal      func(h *harness)
	healAfter int
	// flushFails: while the fault lasts, flushes are expected to time out
	// (a spooled request is kept until delivered).
	flushFails bool
	// drops are the reasons allowed (and required) to count drops.
	drops []string
	// check asserts that the fault really happened.
	check func(t *testing.T, h *harness)
	// only restricts the scenario to these backends.
	only []kind
}

// each runs the fault of the harness' backend.
func each(lib, rw, otel func(h *harness)) func(h *harness) {
	return func(h *harness) {
		switch {
		case h.lib != nil:
			lib(h)
		case h.otlp != nil:
			otel(h)
		default:
			rw(h)
		}
	}
}

// stat reads a fake's counters as one shape.
type stat struct{ resets, refused, abandoned, s429, s503, s403 int }

func (h *harness) stat() stat {
	if h.lib != nil {
		st := h.lib.Stats()
		return stat{st.Resets, st.Refused, st.Abandoned, st.ByStatus[429], st.ByStatus[503], st.ByStatus[403]}
	}
	if h.otlp != nil {
		// gRPC answers are counted by their HTTP equivalent.
		st := h.otlp.Stats()
		return stat{st.Resets, st.Refused, st.Abandoned, st.ByStatus[429], st.ByStatus[503], st.ByStatus[403]}
	}
	st := h.rw.Stats()
	return stat{st.Resets, st.Refused, st.Abandoned, st.ByStatus[429], st.ByStatus[503], st.ByStatus[403]}
}

func TestFaultsReconcileExactly(t *testing.T) {
	scenarios := []scenario{
		{
			name: "backend down longer than many retry cycles", maxElapsed: 150 * time.Millisecond,
			fault:     each(func(h *harness) { h.lib.GoDown(0) }, func(h *harness) { h.rw.GoDown(0) }, func(h *harness) { h.otlp.GoDown(0) }),
			heal:      each(func(h *harness) { h.lib.Up() }, func(h *harness) { h.rw.Up() }, func(h *harness) { h.otlp.Up() }),
			healAfter: 1,
			drops:     []string{telemetry.DropRetriesExceeded},
			check: func(t *testing.T, h *harness) {
				st := h.stat()
				require.Greater(t, st.refused+st.resets, 10, "retried many times before giving up")
			},
		},
		{
			name: "backend down longer than many retry cycles, with a spool", maxElapsed: 50 * time.Millisecond, spool: true,
			fault:      each(func(h *harness) { h.lib.GoDown(0) }, func(h *harness) { h.rw.GoDown(0) }, func(h *harness) { h.otlp.GoDown(0) }),
			heal:       each(func(h *harness) { h.lib.Up() }, func(h *harness) { h.rw.Up() }, func(h *harness) { h.otlp.Up() }),
			healAfter:  1,
			flushFails: true,
			check: func(t *testing.T, h *harness) {
				st := h.stat()
				require.Greater(t, st.refused+st.resets, 10, "retried through many rounds, never dropped")
			},
		},
		{
			name: "slow backend: every attempt times out for a while", timeout: 30 * time.Millisecond,
			fault: func(h *harness) {
				h.setLatency(100 * time.Millisecond)
				// The backend recovers once a few attempts have timed out.
				go func() {
					for h.stat().abandoned < 3 {
						time.Sleep(time.Millisecond)
					}
					h.setLatency(0)
				}()
			},
			check: func(t *testing.T, h *harness) {
				require.Positive(t, h.stat().abandoned, "attempts timed out and were retried")
			},
		},
		{
			name: "backend flaps between 200 and 503",
			fault: each(func(h *harness) { h.lib.FailRandomly(0.5, libratotest.ServiceUnavailable()) }, func(h *harness) { h.rw.FailRandomly(0.5, rwtest.ServiceUnavailable()) },
				func(h *harness) { h.otlp.FailRandomly(0.5, otlptest.ServiceUnavailable()) }),
			check: func(t *testing.T, h *harness) { require.Greater(t, h.stat().s503, 3) },
		},
		{
			name: "429 storm with Retry-After",
			fault: each(func(h *harness) {
				h.lib.FailNext(30, libratotest.TooManyRequests().WithRetryAfter(0))
				h.lib.FailNext(5, libratotest.RateLimitForbidden())
				h.lib.FailNext(1, libratotest.TooManyRequests().WithRetryAfter(time.Second))
			}, func(h *harness) {
				h.rw.FailNext(35, rwtest.TooManyRequests().WithRetryAfter(0))
				h.rw.FailNext(1, rwtest.TooManyRequests().WithRetryAfter(time.Second))
			}, func(h *harness) {
				// RESOURCE_EXHAUSTED with a RetryInfo on gRPC.
				h.otlp.FailNext(35, otlptest.TooManyRequests().WithRetryAfter(0))
				h.otlp.FailNext(1, otlptest.TooManyRequests().WithRetryAfter(time.Second))
			}),
			check: func(t *testing.T, h *harness) {
				st := h.stat()
				require.Equal(t, 36, st.s429+st.s403, "every refusal was retried")
			},
		},
		{
			name: "connection reset in the middle of requests",
			fault: each(func(h *harness) { h.lib.FailNext(10, libratotest.ConnectionReset()) }, func(h *harness) { h.rw.FailNext(10, rwtest.ConnectionReset()) },
				func(h *harness) { h.otlp.FailNext(10, otlptest.ConnectionReset()) }),
			check: func(t *testing.T, h *harness) { require.Equal(t, 10, h.stat().resets) },
		},
	}
	scenarios = append(scenarios, scenario{
		// OTLP only: the receiver takes requests but rejects some of their
		// data points. Every series carries as many instances in each
		// export, so the drop counted in proportion is exact.
		name:  "partial success",
		fault: func(h *harness) { h.otlp.FailNext(rounds, otlptest.PartialSuccess(2)) },
		drops: []string{telemetry.DropPartialRejected},
		only:  []kind{otlpKind, otlpHTTPKind},
		check: func(t *testing.T, h *harness) { require.Equal(t, 2*rounds, h.otlp.Stats().Rejected) },
	})
	for _, sc := range scenarios {
		for _, k := range append(kinds, otlpHTTPKind) {
			if len(sc.only) > 0 && !slices.Contains(sc.only, k) {
				continue
			}
			t.Run(fmt.Sprintf("%s/%s", k, sc.name), func(t *testing.T) {
				t.Parallel()
				s := setup{kind: k, maxElapsed: sc.maxElapsed, timeout: sc.timeout}
				if sc.spool {
					s.spoolDir = t.TempDir()
				}
				h := start(t, s)
				cfg := h.params()
				if sc.fault != nil {
					sc.fault(h)
				}
				healed := sc.heal == nil
				for r := 0; r < rounds; r++ {
					h.drive(cfg, workers, calls, perCall, paths)
					if sc.flushFails && !healed {
						err := h.flush(300 * time.Millisecond)
						require.Error(t, err, "a spooled request waits for the backend")
					} else {
						require.NoError(t, h.flush(30*time.Second))
					}
					if !healed && r == sc.healAfter {
						sc.heal(h)
						healed = true
					}
				}
				require.NoError(t, h.flush(30*time.Second), "everything still queued is sent once healed")
				require.NoError(t, h.shutdown(30*time.Second))

				drops := h.reconcile(paths, true)
				st := h.stat()
				t.Logf("figures %s: sent %d instances, backend holds %.0f, dropped %v; fake: refused %d, reset %d, abandoned %d, 429 %d, 403 %d, 503 %d",
					t.Name(), h.ok.Load(), h.received(), drops, st.refused, st.resets, st.abandoned, st.s429, st.s403, st.s503)
				got := map[string]bool{}
				for r, n := range drops {
					require.Positive(t, n)
					got[r] = true
				}
				want := map[string]bool{}
				for _, r := range sc.drops {
					want[r] = true
				}
				require.Equal(t, want, got, "drop reasons")
				if sc.check != nil {
					sc.check(t, h)
				}
				require.Equal(t, float64(rounds*workers*calls*perCall), float64(h.ok.Load()))
				if sc.spool {
					sp, err := export.OpenSpool(export.SpoolOptions{Dir: s.spoolDir, MaxBytes: 1 << 20})
					require.NoError(t, err)
					require.Empty(t, sp.Stats(), "the spool is empty once everything is delivered")
					require.NoError(t, sp.Close())
				}
			})
		}
	}
}
