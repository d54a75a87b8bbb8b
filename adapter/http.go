package adapter

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshmetrics/meshmetrics/config"
)

// saturated is the queue fill ratio above which /readyz fails, so that a
// replica that cannot keep up stops receiving new connections.
const saturated = 0.9

func (a *Adapter) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{
		// One bad series must not hide all others (as Istio's adapter).
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: false,
	}))
	// Liveness: the process serves HTTP. It never depends on a backend, so
	// a backend outage does not get the pod restarted.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if a.server.Draining() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		for _, q := range a.sinks.Stats() {
			if q.Capacity > 0 && float64(q.Depth) >= saturated*float64(q.Capacity) {
				http.Error(w, fmt.Sprintf("sink %s is saturated: %d of %d queued", q.Sink, q.Depth, q.Capacity), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	// The handler configs in use, secrets redacted, for operators.
	mux.HandleFunc("/debug/config", func(w http.ResponseWriter, _ *http.Request) {
		type entry struct {
			Handler string         `json:"handler"`
			Sinks   config.Sinks   `json:"sinks"`
			Params  *config.Params `json:"params"`
		}
		var out []entry
		for _, h := range a.cache.Handlers() {
			out = append(out, entry{Handler: h.Digest.String(), Sinks: config.SinksOf(h.Params), Params: config.Redacted(h.Params)})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Handler < out[j].Handler })
		w.Header().Set("Content-Type", "application/json")
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(a.opts.Secrets.Redact(b))
	})
	return mux
}
