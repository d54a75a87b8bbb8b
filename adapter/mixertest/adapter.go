package mixertest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
)

// AdapterOptions configure an in-process adapter.
type AdapterOptions struct {
	// BuiltinSinks keeps the adapter's own sinks (Prometheus exposition on /metrics, remote
	// write, ...). By default every handler config feeds one recording sink instead, which
	// Recorded returns.
	BuiltinSinks bool
	// ConfigDir turns on the Mixer-less mode: the adapter serves Envoy's
	// Access Log Service and evaluates the handlers, instances and rules of
	// this directory (see ConfigDir, NewEnvoy and docs/mixerless.md). It is
	// checked for changes every 100ms.
	ConfigDir string
	// Tweak adjusts the adapter's options before it starts (TLS, limits,
	// the access-log options in ALS, ...).
	Tweak func(*adapter.Options)
}

// Adapter is meshmetrics running in the test process on loopback ports.
type Adapter struct {
	*adapter.Adapter
	// Factory builds the recording sinks; nil with BuiltinSinks.
	Factory *sinktest.Factory
}

// StartAdapter starts meshmetrics on 127.0.0.1 with free ports and shuts it down when the
// test ends. Its logs go to t.Log.
func StartAdapter(t testing.TB, o AdapterOptions) *Adapter {
	t.Helper()
	log := logrus.New()
	tw := &testWriter{t: t}
	log.SetOutput(tw)
	opts := adapter.Options{GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "mixertest", Log: log,
		ShutdownTimeout: 10 * time.Second}
	if o.ConfigDir != "" {
		opts.ConfigDir, opts.ConfigReloadInterval = o.ConfigDir, 100*time.Millisecond
	}
	a := &Adapter{}
	if !o.BuiltinSinks {
		a.Factory = sinktest.NewFactory()
		opts.Sinks = func(sinks.Env, *prometheus.Registry) (map[string]sinks.Sink, []sinks.Factory, error) {
			return nil, []sinks.Factory{a.Factory}, nil
		}
	}
	if o.Tweak != nil {
		o.Tweak(&opts)
	}
	ad, err := adapter.New(opts)
	if err != nil {
		t.Fatalf("mixertest: adapter: %v", err)
	}
	if err := ad.Start(); err != nil {
		t.Fatalf("mixertest: adapter: %v", err)
	}
	a.Adapter = ad
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = ad.Shutdown(ctx)
		tw.close()
	})
	return a
}

// testWriter sends log lines to the test's log, so they show only for failed tests. Lines
// written after the test ends are dropped: testing panics on a late Log.
type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}

// Recorded flushes the adapter and returns the recording sink every handler config feeds.
// It fails the test when no handler config has reached the adapter within 5 seconds, or
// when the adapter runs its built-in sinks.
func (a *Adapter) Recorded(t testing.TB) *sinktest.Sink {
	t.Helper()
	if a.Factory == nil {
		t.Fatal("mixertest: the adapter runs its built-in sinks; use Series or Scrape")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for a.Factory.Sink("test") == nil {
		select {
		case <-ctx.Done():
			t.Fatal("mixertest: no handler config reached the adapter (did the report fail or match nothing?)")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatalf("mixertest: flush: %v", err)
	}
	return a.Factory.Sink("test")
}

// Scrape flushes the adapter and reads its /metrics.
func (a *Adapter) Scrape(t testing.TB) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Flush(ctx); err != nil {
		t.Fatalf("mixertest: flush: %v", err)
	}
	families, err := ScrapeURL(ctx, "http://"+a.HTTPAddr()+"/metrics")
	if err != nil {
		t.Fatalf("mixertest: %v", err)
	}
	return families
}

// Series returns the samples of one metric family on /metrics, keyed by their labels as
// `{a="1",b="2"}` (sorted by name; `{}` without labels). Counters and gauges give their value;
// histograms and summaries their sample count.
func (a *Adapter) Series(t testing.TB, family string) map[string]float64 {
	t.Helper()
	return SeriesOf(a.Scrape(t)[family])
}

// ScrapeURL reads a Prometheus text exposition.
func ScrapeURL(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	body, err := getExposition(ctx, url)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(body)
}

// getExposition GETs a text exposition; a status other than 200 is an error
// quoting the start of the body.
func getExposition(ctx context.Context, url string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return resp.Body, nil
}

// Limits of ScrapeURLPrefix: the longest line it reads and the most text it
// keeps. The adapter's own families are a few kilobytes; a page is as large
// as the series it exposes (up to --max-series of them).
const (
	maxScrapeLine = 1 << 20
	maxScrapeKept = 16 << 20
)

// ScrapeURLPrefix reads the families of a Prometheus text exposition whose
// names start with prefix ("meshmetrics_" for the adapter's own). The page
// is read line by line and only those families' lines are kept, so that
// memory follows what is kept, not the size of the page: a client reading
// an adapter's own counters does not hold the user series the same page
// exposes. A line longer than 1 MiB, or more than 16 MiB kept, is an error.
func ScrapeURLPrefix(ctx context.Context, url, prefix string) (map[string]*dto.MetricFamily, error) {
	body, err := getExposition(ctx, url)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	kept, err := keepFamilies(body, prefix)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(strings.NewReader(kept))
}

// keepFamilies returns the lines of the text exposition r that belong to
// families named with prefix: their samples, and their # HELP and # TYPE.
func keepFamilies(r io.Reader, prefix string) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxScrapeLine)
	var kept strings.Builder
	for sc.Scan() {
		line := sc.Text()
		name := line
		if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
			name = rest
		} else if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name = rest
		} else if strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		if kept.Len()+len(line)+1 > maxScrapeKept {
			return "", fmt.Errorf("more than %d MiB of %s* families", maxScrapeKept>>20, prefix)
		}
		kept.WriteString(line)
		kept.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return "", fmt.Errorf("a line longer than %d MiB", maxScrapeLine>>20)
		}
		return "", err
	}
	return kept.String(), nil
}

// SeriesOf flattens a metric family as Series does; nil gives an empty map.
func SeriesOf(f *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		labels := make([]string, 0, len(m.GetLabel()))
		for _, l := range m.GetLabel() {
			labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
		}
		slices.Sort(labels)
		key := "{" + strings.Join(labels, ",") + "}"
		switch {
		case m.Counter != nil:
			out[key] = m.GetCounter().GetValue()
		case m.Gauge != nil:
			out[key] = m.GetGauge().GetValue()
		case m.Histogram != nil:
			out[key] = float64(m.GetHistogram().GetSampleCount())
		case m.Summary != nil:
			out[key] = float64(m.GetSummary().GetSampleCount())
		case m.Untyped != nil:
			out[key] = m.GetUntyped().GetValue()
		}
	}
	return out
}

// Aggregate is what the recording sink holds for one series: count, sum, min, max and last
// value of its samples.
type Aggregate = sinktest.Aggregate

// Key is the recording sink's key of a series: the metric name and its label values in
// label order, as Recorded(t).Series() is keyed.
func Key(name string, labelValues ...string) string { return sinktest.Key(name, labelValues...) }
