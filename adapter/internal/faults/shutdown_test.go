package faults_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"sync"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/golang/snappy"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/prompb"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/rwtest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
)

// injector is the fault injection of the harness' fake.
func (h *harness) injector() interface {
	SetLatency(time.Duration)
	GoDown(time.Duration)
	Up()
} {
	switch {
	case h.lib != nil:
		return h.lib
	case h.otlp != nil:
		return h.otlp
	}
	return h.rw
}

func (h *harness) setLatency(d time.Duration) { h.injector().SetLatency(d) }

func (h *harness) goDown() { h.injector().GoDown(0) }

func (h *harness) up() { h.injector().Up() }

func (h *harness) backendRequests() int {
	switch {
	case h.lib != nil:
		return h.lib.Stats().Requests
	case h.otlp != nil:
		return h.otlp.Stats().Requests
	}
	return h.rw.Stats().Requests
}

// TestSIGTERMWithSendsInFlightLosesNothing: Mixer keeps calling while the
// adapter shuts down, and a flush is being sent to a slow backend. Every
// call answered OK reaches the backend; the others are refused (Mixer sees
// Unavailable), never silently lost.
func TestSIGTERMWithSendsInFlightLosesNothing(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			h := start(t, setup{kind: k})
			h.setLatency(150 * time.Millisecond)
			cfg := h.params()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						if h.call(cfg, instances(perCall, paths, w)) != nil {
							return // refused: Mixer would try another replica
						}
					}
				}(w)
			}
			require.Eventually(t, func() bool { return h.ok.Load() >= 400 }, 10*time.Second, time.Millisecond)
			flushed := make(chan struct{})
			go func() {
				defer close(flushed)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = h.a.Flush(ctx) // may find the sinks closing: Close sends what it would have
			}()
			require.Eventually(t, func() bool { return h.backendRequests() > 0 }, 10*time.Second, time.Millisecond, "a send is in flight")
			require.NoError(t, h.shutdown(20*time.Second))
			close(stop)
			wg.Wait()
			<-flushed

			accepted := h.counters("meshmetrics_instances_accepted_total", "")[""]
			require.Equal(t, float64(h.ok.Load()), accepted)
			require.Positive(t, h.refused.Load(), "calls during the shutdown were refused")
			require.Empty(t, h.drops())
			require.Equal(t, accepted, h.received(), "every instance answered OK is in the backend")
			if h.rw != nil {
				require.Empty(t, h.rw.Violations())
				require.Len(t, h.rw.Stale(rwName), paths, "the final push ends every series with a stale marker")
			}
			t.Logf("figures %s: %d instances answered OK and delivered, %d refused during the shutdown", t.Name(), h.ok.Load(), h.refused.Load())
		})
	}
}

// TestSIGTERMDuringAnOutage: the shutdown timeout cuts the sends; without a
// spool what was not sent is counted (shutdown_timeout), with a spool it is
// kept and sent by the next run.
func TestSIGTERMDuringAnOutage(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k)+"/without a spool", func(t *testing.T) {
			t.Parallel()
			h := start(t, setup{kind: k})
			h.goDown()
			h.drive(h.params(), workers, calls, perCall, paths)
			require.Error(t, h.shutdown(300*time.Millisecond), "the shutdown reports what it could not send")
			drops := h.drops()
			require.Zero(t, h.received())
			if k == libratoKind || k.isOTLP() {
				require.Equal(t, map[string]float64{telemetry.DropShutdown: float64(h.ok.Load())}, drops, "every instance, queued or in flight")
			} else {
				require.Equal(t, map[string]float64{telemetry.DropShutdown: 2 * paths}, drops, "the final push: a value and a stale marker per series")
			}
		})
		t.Run(string(k)+"/with a spool", func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			h := start(t, setup{kind: k, spoolDir: dir})
			h.goDown()
			h.drive(h.params(), workers, calls, perCall, paths)
			err := h.shutdown(300 * time.Millisecond)
			require.ErrorContains(t, err, "kept in the spool for the next start")
			require.Empty(t, h.drops(), "nothing dropped")

			sp, err := export.OpenSpool(export.SpoolOptions{Dir: dir, MaxBytes: 1 << 30})
			require.NoError(t, err)
			st := sp.Stats()
			require.Len(t, st, 1)
			if k == libratoKind || k.isOTLP() {
				require.Equal(t, int(h.ok.Load()), st[0].Instances, "every instance is in the spool")
			} else {
				require.Equal(t, 2*paths, st[0].Instances, "the final push is in the spool")
			}
			require.NoError(t, sp.Close())

			// The next run, once the backend is back: the spool goes first.
			// A restart takes more than a second; Librato keeps one value per
			// series and time, and a run stamps its first period from its
			// start, after the times the previous run used.
			time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
			h.up()
			h2 := start(t, setup{kind: k, spoolDir: dir, libSrv: h.lib, rwSrv: h.rw, otlpSrv: h.otlp})
			h2.drive(h2.params(), workers, calls, perCall, paths)
			require.NoError(t, h2.flush(30*time.Second))
			require.NoError(t, h2.shutdown(30*time.Second))
			require.Empty(t, h2.drops())
			if k == libratoKind || k.isOTLP() {
				require.Equal(t, float64(h.ok.Load()+h2.ok.Load()), h.received(), "both runs' instances are in the backend")
			} else {
				require.Empty(t, h.rw.Violations())
				require.Equal(t, float64(h.ok.Load()), firstRunTotal(h.rw), "the first run's series, replayed, end at its totals")
				require.Equal(t, float64(h2.ok.Load()), h.received(), "the second run's counters start again (a reset)")
			}
		})
	}
}

// firstRunTotal sums, over the series, the value just before each one's
// first stale marker: what the first run's final push said.
func firstRunTotal(rw *rwtest.Server) float64 {
	var total float64
	for _, samples := range rw.Samples() {
		for i, s := range samples {
			if math.Float64bits(s.Value) == rwtest.StaleNaN {
				if i > 0 {
					total += samples[i-1].Value
				}
				break
			}
		}
	}
	return total
}

// TestRemoteWriteReplayRefusedAsOutOfOrderIsCounted: the spool of a run
// killed in an outage is replayed after a restart, but another writer has
// meanwhile pushed newer samples of the same series. Prometheus answers 400
// (out of order) and drops the whole request; the adapter counts those
// samples as replay_rejected, apart from refusals of new data, and what the
// new run sends still arrives.
func TestRemoteWriteReplayRefusedAsOutOfOrderIsCounted(t *testing.T) {
	dir := t.TempDir()
	h := start(t, setup{kind: rwKind, spoolDir: dir})
	h.goDown()
	h.drive(h.params(), workers, calls, perCall, paths)
	require.ErrorContains(t, h.shutdown(300*time.Millisecond), "kept in the spool")

	// Another writer (a replica without replica_label) gets there first.
	var series []prompb.TimeSeries
	future := time.Now().Add(time.Minute).UnixMilli()
	for i := 0; i < paths; i++ {
		series = append(series, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: rwName}, {Name: "path", Value: fmt.Sprintf("/p%d", i)}},
			Samples: []prompb.Sample{{Value: 1, Timestamp: future}}})
	}
	h.up()
	postRemoteWrite(t, h.rw.URL(), series)

	h2 := start(t, setup{kind: rwKind, spoolDir: dir, rwSrv: h.rw})
	require.NoError(t, h2.call(h2.params(), []*metricpb.InstanceMsg{{Name: instanceName, Value: mt.Int(1),
		Dimensions: map[string]*policypb.Value{"path": mt.Str("/fresh")}}}))
	require.NoError(t, h2.flush(30*time.Second))
	require.Equal(t, map[string]float64{telemetry.DropReplayRejected: 2 * paths}, h2.drops(),
		"the spooled final push (a value and a stale marker per series), refused whole")
	require.Positive(t, h.rw.Stats().OutOfOrder)
	require.Equal(t, 1.0, h.rw.Last(rwName)[rwName+`{path="/fresh"}`], "the new run's data arrives")
	require.Empty(t, h.rw.Violations())
}

func postRemoteWrite(t *testing.T, url string, series []prompb.TimeSeries) {
	t.Helper()
	raw, err := (&prompb.WriteRequest{Timeseries: series}).Marshal()
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(snappy.Encode(nil, raw)))
	require.NoError(t, err)
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	req.Header.Set("User-Agent", "another-writer")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
}
