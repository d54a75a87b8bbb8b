package adapter

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/sirupsen/logrus"
)

// httpMetrics count what the HTTP server refuses or abandons. They exist at
// 0 from the start.
type httpMetrics struct {
	connectionsRefused prometheus.Counter
	connectionsEvicted prometheus.Counter
	scrapesRefused     prometheus.Counter
	scrapesAbandoned   prometheus.Counter
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		connectionsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshmetrics_http_connections_refused_total",
			Help: "HTTP connections closed at once because --http-max-connections were open, every one serving a request.",
		}),
		connectionsEvicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshmetrics_http_connections_evicted_total",
			Help: "Idle HTTP connections (keep-alive, or not yet sending a request) closed to make room for a new one at --http-max-connections.",
		}),
		scrapesRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshmetrics_scrapes_refused_total",
			Help: "Scrapes of /metrics answered 503 because --http-max-concurrent-scrapes were being written.",
		}),
		scrapesAbandoned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshmetrics_scrapes_abandoned_total",
			Help: "Scrapes of /metrics abandoned because the client did not read them within --http-write-timeout (or went away).",
		}),
	}
	reg.MustRegister(m.connectionsRefused, m.connectionsEvicted, m.scrapesRefused, m.scrapesAbandoned)
	return m
}

// newHTTPServer is the server of /metrics, /healthz, /readyz and, when
// enabled, /debug/config. Every phase of a connection has a deadline, so an
// idle or slow client cannot hold a connection or a scrape's memory for
// long; the connection cap is enforced by the listener
// (idleEvictingListener, whose ConnState hook Start sets).
func newHTTPServer(h http.Handler, o *Options) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// A scrape has this long to be written; a client that does not read
		// it is cut off and the scrape abandoned (and counted).
		WriteTimeout:   o.HTTPWriteTimeout,
		IdleTimeout:    o.HTTPIdleTimeout,
		MaxHeaderBytes: 64 << 10,
	}
}

// serveHTTP serves srv on lis: plain HTTP, or TLS and basic authentication
// as the exporter-toolkit web config file says (--web.config.file, the
// convention of Prometheus exporters; re-read on every new connection).
func serveHTTP(srv *http.Server, lis net.Listener, webConfigFile string, log *logrus.Logger) error {
	if webConfigFile == "" {
		return srv.Serve(lis)
	}
	// exporter-toolkit logs with slog: only its warnings and errors are
	// worth a line in the adapter's log.
	logger := slog.New(slog.NewTextHandler(log.WriterLevel(logrus.WarnLevel), &slog.HandlerOptions{Level: slog.LevelWarn}))
	return web.Serve(lis, srv, &web.FlagConfig{WebConfigFile: &webConfigFile}, logger)
}

// scrapeGate bounds the scrapes of /metrics written at once: each holds a
// copy of one metric's values at a time and its encoder's buffers, so the
// gate bounds the memory scrapes can take, whatever clients do.
type scrapeGate struct {
	slots   chan struct{}
	refused prometheus.Counter
}

func (g *scrapeGate) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case g.slots <- struct{}{}:
			defer func() { <-g.slots }()
			next.ServeHTTP(w, r)
		default:
			g.refused.Inc()
			http.Error(w, "too many scrapes at once; retry", http.StatusServiceUnavailable)
		}
	})
}

// countingWriter notices a failed write: the client went away or did not
// read in time (WriteTimeout).
type countingWriter struct {
	w      io.Writer
	failed bool
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil && !c.failed {
		c.failed = true
	}
	return n, err
}

var errScrapeAbandoned = errors.New("scrape abandoned: the client did not read it in time or went away")
