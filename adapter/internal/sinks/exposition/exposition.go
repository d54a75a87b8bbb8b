// Package exposition is the scrape side of the Prometheus sink: the series of
// every metric that handler configs define, kept in a series registry and
// written in the Prometheus text format under Istio's names.
//
// The adapter's own metrics go through client_golang; the sink's series are
// written directly (text.go). client_golang's Gather sorts and hashes every
// series on every scrape and its label pairs cost about 80 bytes per label
// and series, which made a 100k-series scrape take over a second.
package exposition

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/series"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/cumulative"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/promnaming"
	"github.com/meshmetrics/meshmetrics/config"
)

// Key is the sink key (and sink name) of the exposition.
const Key = "prometheus"

// reservedPrefixes are the names of the collectors that share the adapter's
// registry (its own metrics, Go and process metrics, promhttp's): a handler
// metric under one of them would collide at scrape time.
var reservedPrefixes = [...]string{"meshmetrics_", "go_", "process_", "promhttp_"}

// state is one exposed series.
type state struct {
	cumulative.Value
	// labels is the series' label set as exposed, `a="x",b="y"` (sorted,
	// escaped, no braces), built on its first sample; a scrape copies it
	// as it is.
	labels string
	ready  bool
}

// family is one metric definition bound in the exposition.
type family struct {
	names  promnaming.Names
	help   string
	kind   sinks.Kind
	bounds []float64
	// le are the bounds as `le` label values, formatted once.
	le []string
	// sortedNames are the label names sorted; order[j] is the index in the
	// sample's label values of sortedNames[j].
	sortedNames []string
	order       []int
	fam         *series.Family[*state]
}

// Sink is the sink behind /metrics: its series are written by
// WriteText after the adapter's own metrics. Metric definitions come and go
// with handler configs.
type Sink struct {
	env    sinks.Env
	series *series.Registry[*state]
	// defs are the metric definitions, with their exposition data.
	defs *series.Catalog[*state, *family]

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// New makes the exposition sink. It expires idle series every
// env.Tick until Close.
func New(env sinks.Env) *Sink {
	env = withDefaults(env)
	e := &Sink{env: env, stop: make(chan struct{}), done: make(chan struct{})}
	e.series = series.New(series.Options[*state]{
		MaxSeries: env.MaxSeries,
		NewState: func(f *series.Family[*state]) *state {
			return &state{Value: cumulative.NewValue(f.Metric)}
		},
	})
	e.defs = series.NewCatalog[*state, *family](e.series)
	go e.expireLoop()
	return e
}

func withDefaults(env sinks.Env) sinks.Env {
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Tick <= 0 {
		env.Tick = time.Second
	}
	return env
}

// Name implements sinks.Sink.
func (e *Sink) Name() string { return Key }

// Bind implements sinks.Sink: it refuses a definition whose names cannot be
// exposed, shares the series of an identical definition, and lets a changed
// definition supersede the older one.
func (e *Sink) Bind(m *sinks.Metric) (sinks.Binding, error) {
	names, err := checkMetric(m)
	if err != nil {
		return nil, err
	}
	scale := sinks.DurationScale(m.DurationUnit, config.DurationUnit_SECONDS)
	f, err := e.defs.Bind(names.Name, names.Exposed, m, scale, func(f *series.Family[*state]) *family { return newFamily(f, names, m) })
	var clash *series.ClashError
	if errors.As(err, &clash) {
		return nil, fmt.Errorf("metric %s would expose %s, which metric %s already exposes", clash.Metric, clash.Series, clash.Other)
	}
	if err != nil {
		return nil, err
	}
	return f, nil
}

func checkMetric(m *sinks.Metric) (promnaming.Names, error) {
	names, err := promnaming.Resolve(m)
	if err != nil {
		return names, err
	}
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(names.Name, p) {
			return names, fmt.Errorf("metric name %s: the prefix %q is reserved for the adapter's own metrics on /metrics", names.Name, p)
		}
	}
	return names, nil
}

func newFamily(fam *series.Family[*state], names promnaming.Names, m *sinks.Metric) *family {
	f := &family{fam: fam, names: names, kind: m.Kind, bounds: m.Buckets, help: m.Description}
	f.order = make([]int, len(names.Labels))
	for i := range f.order {
		f.order[i] = i
	}
	sort.Slice(f.order, func(i, j int) bool { return names.Labels[f.order[i]] < names.Labels[f.order[j]] })
	f.sortedNames = make([]string, len(f.order))
	for j, i := range f.order {
		f.sortedNames[j] = names.Labels[i]
	}
	for _, b := range m.Buckets {
		f.le = append(f.le, string(appendFloat(nil, b)))
	}
	return f
}

// labelText renders a series' labels as exposed: sorted by name, values made
// valid UTF-8 and escaped. Empty values are kept: a series with an empty
// label equals one without it, and keeping the name keeps every series of a
// family alike.
func (f *family) labelText(values []string) string {
	var b []byte
	for j, i := range f.order {
		if j > 0 {
			b = append(b, ',')
		}
		v := ""
		if i < len(values) {
			v = promnaming.LabelValue(values[i])
		}
		b = append(b, f.sortedNames[j]...)
		b = append(b, '=', '"')
		b = appendEscaped(b, v, true)
		b = append(b, '"')
	}
	return string(b)
}

// Unbind implements sinks.Sink. The last binding of a definition removes its
// series.
func (e *Sink) Unbind(b sinks.Binding) {
	e.defs.Unbind(b)
	e.setSeriesGauge()
}

// Consume implements sinks.Sink.
func (e *Sink) Consume(b *sinks.Batch) {
	d := e.series.Apply(b, func(f *series.Family[*state], s *series.Series[*state], v float64) {
		st := s.State
		if !st.ready {
			fam, ok := e.defs.Info(f)
			if !ok {
				return // cannot happen: Bind stores the family before returning it
			}
			st.labels, st.ready = fam.labelText(s.Labels), true
		}
		st.Record(f.Metric.Kind, f.Metric.Buckets, v)
	})
	series.Report(e.env, Key, d)
	e.setSeriesGauge()
}

func (e *Sink) setSeriesGauge() {
	if e.env.Metrics != nil {
		e.env.Metrics.SinkSeries.WithLabelValues(Key).Set(float64(e.series.Len()))
	}
}

// Flush implements sinks.Sink; a scrape reads the series directly, so there is
// nothing to send.
func (e *Sink) Flush(context.Context) error { return nil }

// Close implements sinks.Sink: it stops expiring series. The collector stays
// registered, so that a scrape during shutdown still sees the last values.
func (e *Sink) Close(ctx context.Context) error {
	e.once.Do(func() { close(e.stop) })
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Sink) expireLoop() {
	defer close(e.done)
	t := time.NewTicker(e.env.Tick)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			if e.series.Expire(e.env.Now()) > 0 {
				e.setSeriesGauge()
			}
		}
	}
}

// Len is the number of exposed series.
func (e *Sink) Len() int { return e.series.Len() }

func (e *Sink) families() []*family { return e.defs.Infos() }

// expositionFactory routes handler configs to the one exposition.
type expositionFactory struct{ e *Sink }

// NewFactory is the sinks.Factory of the exposition: every config
// whose params enable exposition shares e, which the adapter adds to its sink
// set as a permanent sink. It is the default backend: a config that
// configures none is exposed (sinks.Resolve).
func NewFactory(e *Sink) sinks.Factory { return expositionFactory{e} }

// IsDefault implements sinks.Default.
func (expositionFactory) IsDefault() {}

// Configured implements sinks.Factory: p has a prometheus block.
func (expositionFactory) Configured(p *config.Params) bool { return p.Prometheus != nil }

// Normalize implements sinks.Factory: exposed metrics need fixed names and
// label names.
func (f expositionFactory) Normalize(p *config.Params) config.FieldErrors {
	if f.Key(p) != "" && len(p.Metrics) == 0 {
		return config.FieldErrors{{Field: "metrics", Message: "required for Prometheus exposition (only Librato can take instances without a metrics list)"}}
	}
	return nil
}

// Key implements sinks.Factory: exposed unless the prometheus block turns
// exposition off. (sinks.Resolve asks only when the block is there, or when
// no backend is configured at all.)
func (expositionFactory) Key(p *config.Params) string {
	if p.Prometheus != nil && p.Prometheus.DisableExposition {
		return ""
	}
	return Key
}

// Check implements sinks.Factory: every metric must have valid, distinct
// Prometheus names.
func (expositionFactory) Check(_ *config.Params, metrics []*sinks.Metric) error {
	if err := promnaming.CheckAll(metrics); err != nil {
		return fmt.Errorf("prometheus: %w", err)
	}
	for i, m := range metrics {
		if _, err := checkMetric(m); err != nil {
			return fmt.Errorf("prometheus: metrics[%d]: %w", i, err)
		}
	}
	return nil
}

// New implements sinks.Factory.
func (f expositionFactory) New(*config.Params) (sinks.Sink, error) { return f.e, nil }
