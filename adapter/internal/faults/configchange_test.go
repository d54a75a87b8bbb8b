package faults_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/config"
)

// TestHandlerConfigsChangingUnderLoad: Mixer's calls alternate between two
// configs of one destination while the handler cache holds one config, so
// that handlers are built and closed all the time; then every call moves
// to a config naming another destination, and the old sink drains and
// closes. Nothing is lost or counted twice, and series neither double (one
// per label set, whatever the number of configs) nor leak (the old sink's
// gauge goes with it).
func TestHandlerConfigsChangingUnderLoad(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			h := start(t, setup{kind: k, tweak: func(o *adapter.Options) { o.HandlerCacheSize = 1 }})
			a := h.params()
			b := h.params(func(p *config.Params) {
				p.Metrics = append(p.Metrics, &config.Params_MetricInfo{InstanceName: "inflight.instance.istio-system",
					Kind: config.Params_MetricInfo_GAUGE, Name: "inflight", LabelNames: []string{"path"}})
			})
			c := h.params(func(p *config.Params) {
				switch {
				case p.Librato != nil:
					p.Librato.Tags = map[string]string{"phase": "c"}
				case p.Otlp != nil:
					p.Otlp.ResourceAttributes = map[string]string{"phase": "c"}
				default:
					p.Prometheus.RemoteWrite.ExternalLabels = map[string]string{"phase": "c"}
				}
			})

			// Flushes run under the load too.
			stopFlush := make(chan struct{})
			flusher := sync.WaitGroup{}
			flusher.Add(1)
			go func() {
				defer flusher.Done()
				for {
					select {
					case <-stopFlush:
						return
					case <-time.After(10 * time.Millisecond):
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						_ = h.a.Flush(ctx)
						cancel()
					}
				}
			}()
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; i < 4*calls; i++ {
						cfg := a
						if (w+i)%2 == 1 {
							cfg = b
						}
						if err := h.call(cfg, instances(perCall, paths, w+i)); err != nil {
							t.Errorf("call: %v", err)
						}
					}
				}(w)
			}
			wg.Wait()
			built := h.counters("meshmetrics_handlers_built_total", "")[""]
			require.Greater(t, built, 4.0, "handlers were rebuilt under load")
			oldSink := h.sinkNames()
			require.Len(t, oldSink, 1, "both configs share one sink")
			require.Eventually(t, func() bool { return h.counters("meshmetrics_sink_series", "sink")[oldSink[0]] == paths },
				10*time.Second, time.Millisecond, "one series per label set, not one per config")

			// Every call moves to another destination.
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; i < 2*calls; i++ {
						if err := h.call(c, instances(perCall, paths, w+i)); err != nil {
							t.Errorf("call: %v", err)
						}
					}
				}(w)
			}
			wg.Wait()
			close(stopFlush)
			flusher.Wait()
			require.Eventually(t, func() bool {
				names := h.sinkNames()
				return len(names) == 1 && names[0] != oldSink[0]
			}, 10*time.Second, time.Millisecond, "the old sink closed once its last handler went")
			require.NotContains(t, h.counters("meshmetrics_sink_series", "sink"), oldSink[0], "its gauge went with it")
			require.NoError(t, h.flush(30*time.Second))
			require.NoError(t, h.shutdown(30*time.Second))

			accepted := h.counters("meshmetrics_instances_accepted_total", "")[""]
			require.Equal(t, float64(h.ok.Load()), accepted)
			require.Empty(t, h.drops())
			require.Equal(t, accepted, h.received(), "every instance delivered once")
			switch {
			case h.lib != nil:
				series := map[string]bool{}
				for _, p := range h.lib.Measurements() {
					if strings.EqualFold(p.Name, libratoName) {
						series[p.Tags["path"]+"|"+p.Tags["phase"]] = true
					}
				}
				require.Len(t, series, 2*paths, "a series per path and destination")
			case h.otlp != nil:
				require.Empty(t, h.otlp.Violations())
				series := map[string]bool{}
				for _, ps := range h.otlp.Series(otlpName) {
					for _, p := range ps {
						series[p.Attributes["path"]+"|"+p.ResourceAttr["phase"]] = true
					}
				}
				require.Len(t, series, 2*paths, "a series per path and destination")
			default:
				require.Empty(t, h.rw.Violations())
				require.Len(t, h.rw.Last(rwName), 2*paths, "a series per path and destination")
				require.Len(t, h.rw.Stale(rwName), 2*paths, "the old sink ended its series, the shutdown the new ones")
			}
			t.Logf("figures %s: %d instances over %.0f handler builds, all delivered", t.Name(), h.ok.Load(), built)
		})
	}
}

// sinkNames lists the sinks with a queue (the live ones).
func (h *harness) sinkNames() []string {
	var out []string
	for name := range h.counters("meshmetrics_queue_capacity", "sink") {
		out = append(out, name)
	}
	return out
}
