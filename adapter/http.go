package adapter

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/config"
)

// saturated is the queue fill ratio above which /readyz fails, so that a
// replica that cannot keep up stops receiving new connections.
const saturated = 0.9

func (a *Adapter) mux() *http.ServeMux {
	mux := http.NewServeMux()
	gate := &scrapeGate{slots: make(chan struct{}, a.opts.HTTPMaxConcurrentScrapes), refused: a.httpMetrics.scrapesRefused}
	mux.Handle("/metrics", gate.wrap(&metricsHandler{reg: a.registry, exposed: a.exposed, log: a.opts.Log, abandoned: a.httpMetrics.scrapesAbandoned}))
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
		if a.rules != nil {
			// A refused reload leaves the last good config serving: still
			// ready, with the failure in the detail.
			_, detail := a.rules.Status()
			fmt.Fprintln(w, detail)
		}
	})
	if !a.opts.DebugConfig {
		return mux
	}
	// The handler configs in use, secrets redacted, for operators; off unless
	// --debug-config: it shows destinations and label names to anyone who
	// reaches the port.
	mux.HandleFunc("/debug/config", func(w http.ResponseWriter, _ *http.Request) {
		type entry struct {
			Handler string         `json:"handler"`
			Sinks   []string       `json:"sinks"`
			Params  *config.Params `json:"params"`
		}
		var out []entry
		for _, h := range a.cache.Handlers() {
			out = append(out, entry{Handler: h.Digest.String(), Sinks: h.Sinks(), Params: config.Redacted(h.Params)})
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

// textWriter is a sink whose series /metrics serves (the Prometheus
// exposition).
type textWriter interface {
	WriteText(w io.Writer) error
}

// metricsHandler serves the adapter's own metrics, encoded by client_golang,
// followed by the series of the exposition sinks, written directly. Names
// cannot clash: the exposition refuses the prefixes of the own metrics.
type metricsHandler struct {
	reg       *prometheus.Registry
	exposed   []textWriter
	log       *logrus.Logger
	abandoned prometheus.Counter
}

func (h *metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	cw := &countingWriter{w: w}
	defer func() {
		if cw.failed {
			h.abandoned.Inc()
			h.log.Debug(errScrapeAbandoned.Error())
		}
	}()
	var out io.Writer = cw
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		// The fastest level: a scrape of 100k series is about 10 MB of text.
		gz, _ := gzip.NewWriterLevel(cw, gzip.BestSpeed)
		defer gz.Close()
		out = gz
	}
	mfs, err := h.reg.Gather()
	if err != nil {
		// One bad own metric must not hide everything (as promhttp's
		// ContinueOnError).
		h.log.WithError(err).Warn("gathering the adapter's own metrics")
	}
	enc := expfmt.NewEncoder(out, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return // the client went away
		}
	}
	for _, x := range h.exposed {
		if err := x.WriteText(out); err != nil {
			return
		}
	}
}
