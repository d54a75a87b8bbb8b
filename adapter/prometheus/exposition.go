// Package prometheus is the scrape side of the Prometheus sink: the series of
// every metric that handler configs define, kept in a series registry and
// exposed through a client_golang collector under Istio's names.
package prometheus

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshmetrics/meshmetrics/adapter/prometheus/cumulative"
	"github.com/meshmetrics/meshmetrics/adapter/prometheus/naming"
	"github.com/meshmetrics/meshmetrics/adapter/series"
	"github.com/meshmetrics/meshmetrics/adapter/sink"
	"github.com/meshmetrics/meshmetrics/adapter/telemetry"
	"github.com/meshmetrics/meshmetrics/config"
)

// ExpositionKey is the sink key (and sink name) of the exposition.
const ExpositionKey = "prometheus"

// reservedPrefixes are the names of the collectors that share the adapter's
// registry (its own metrics, Go and process metrics, promhttp's): a handler
// metric under one of them would collide at scrape time.
var reservedPrefixes = [...]string{"meshmetrics_", "go_", "process_", "promhttp_"}

// state is one exposed series.
type state struct {
	cumulative.Value
	// labels are built on the series' first sample and never change, so a
	// scrape shares them instead of building them again ("immutable by
	// contract" in client_golang's terms).
	labels []*dto.LabelPair
}

// family is one metric definition bound in the exposition.
type family struct {
	key    string
	names  naming.Names
	desc   *prometheus.Desc
	kind   sink.Kind
	bounds []float64
	// sortedNames are the label names sorted; order[j] is the index in the
	// sample's label values of sortedNames[j].
	sortedNames []string
	order       []int
	refs        int
	fam         *series.Family[*state]
	// hint is the series count of the latest scrape, to size the next one.
	hint atomic.Int64
}

// Exposition is the sink behind /metrics. Its collector is registered once;
// metric definitions come and go with handler configs without touching the
// Prometheus registry, so a changed definition never clashes with the old
// one there (client_golang keeps a name's label names for the life of a
// registry).
type Exposition struct {
	env    sink.Env
	series *series.Registry[*state]

	mu   sync.Mutex
	fams map[string]*family // by full name
	byF  sync.Map           // *series.Family[*state] -> *family, read on a series' first sample
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// NewExposition makes the exposition sink and registers its collector on
// reg. It expires idle series every env.Tick until Close.
func NewExposition(env sink.Env, reg prometheus.Registerer) (*Exposition, error) {
	env = withDefaults(env)
	e := &Exposition{env: env, fams: map[string]*family{}, stop: make(chan struct{}), done: make(chan struct{})}
	e.series = series.New(series.Options[*state]{
		MaxSeries: env.MaxSeries,
		NewState: func(f *series.Family[*state]) *state {
			return &state{Value: cumulative.NewValue(f.Metric)}
		},
	})
	if err := reg.Register(uncheckedCollector{e}); err != nil {
		return nil, fmt.Errorf("prometheus exposition: %w", err)
	}
	go e.expireLoop()
	return e, nil
}

func withDefaults(env sink.Env) sink.Env {
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Tick <= 0 {
		env.Tick = time.Second
	}
	return env
}

// Name implements sink.Sink.
func (e *Exposition) Name() string { return ExpositionKey }

// Bind implements sink.Sink: it refuses a definition whose names cannot be
// exposed, shares the series of an identical definition, and lets a changed
// definition supersede the older one.
func (e *Exposition) Bind(m *sink.Metric) (sink.Binding, error) {
	names, err := checkMetric(m)
	if err != nil {
		return nil, err
	}
	key := m.DefinitionKey()
	scale := sink.DurationScale(m.DurationUnit, config.DurationUnit_SECONDS)
	e.mu.Lock()
	defer e.mu.Unlock()
	if cur := e.fams[names.Name]; cur != nil && cur.key == key {
		cur.refs++
		return e.series.Bind(names.Name, m, scale), nil
	}
	for name, other := range e.fams {
		if name == names.Name {
			continue
		}
		if clash := overlap(names.Exposed, other.names.Exposed); clash != "" {
			return nil, fmt.Errorf("metric %s would expose %s, which metric %s already exposes", names.Name, clash, other.names.Name)
		}
	}
	fam := newFamily(key, names, m)
	if old := e.fams[names.Name]; old != nil {
		e.byF.Delete(old.fam)
	}
	fam.fam = e.series.Bind(names.Name, m, scale) // supersedes a different definition
	e.fams[names.Name] = fam
	e.byF.Store(fam.fam, fam)
	return fam.fam, nil
}

func checkMetric(m *sink.Metric) (naming.Names, error) {
	names, err := naming.Resolve(m)
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

func overlap(a, b []string) string {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return x
			}
		}
	}
	return ""
}

func newFamily(key string, names naming.Names, m *sink.Metric) *family {
	f := &family{key: key, names: names, kind: m.Kind, bounds: m.Buckets, refs: 1,
		desc: prometheus.NewDesc(names.Name, m.Description, names.Labels, nil)}
	f.order = make([]int, len(names.Labels))
	for i := range f.order {
		f.order[i] = i
	}
	sort.Slice(f.order, func(i, j int) bool { return names.Labels[f.order[i]] < names.Labels[f.order[j]] })
	f.sortedNames = make([]string, len(f.order))
	for j, i := range f.order {
		f.sortedNames[j] = names.Labels[i]
	}
	return f
}

// labelPairs builds a series' labels, sorted by name, values made valid
// UTF-8. Names are shared by every series of the family.
func (f *family) labelPairs(values []string) []*dto.LabelPair {
	pairs := make([]dto.LabelPair, len(f.order))
	vals := make([]string, len(f.order))
	out := make([]*dto.LabelPair, len(f.order))
	for j, i := range f.order {
		if i < len(values) {
			vals[j] = naming.LabelValue(values[i])
		}
		pairs[j].Name = &f.sortedNames[j]
		pairs[j].Value = &vals[j]
		out[j] = &pairs[j]
	}
	return out
}

// Unbind implements sink.Sink. The last binding of a definition removes its
// series.
func (e *Exposition) Unbind(b sink.Binding) {
	f, ok := b.(*series.Family[*state])
	if !ok {
		return
	}
	e.series.Unbind(b)
	e.mu.Lock()
	defer e.mu.Unlock()
	if cur := e.fams[f.Name]; cur != nil && cur.fam == f {
		cur.refs--
		if cur.refs <= 0 {
			delete(e.fams, f.Name)
			e.byF.Delete(f)
		}
	}
	e.setSeriesGauge()
}

// Consume implements sink.Sink.
func (e *Exposition) Consume(b *sink.Batch) {
	d := e.series.Apply(b, func(f *series.Family[*state], s *series.Series[*state], v float64) {
		st := s.State
		if st.labels == nil {
			fam, ok := e.byF.Load(f)
			if !ok {
				return // cannot happen: Bind stores the family before returning it
			}
			st.labels = fam.(*family).labelPairs(s.Labels)
		}
		st.Record(f.Metric.Kind, f.Metric.Buckets, v)
	})
	e.countDrops(d)
	e.setSeriesGauge()
}

func (e *Exposition) countDrops(d series.Drops) {
	if e.env.Metrics == nil || d.Total() == 0 {
		return
	}
	e.env.Metrics.Dropped(ExpositionKey, telemetry.DropSeriesLimit, d.FamilyLimit)
	e.env.Metrics.Dropped(ExpositionKey, telemetry.DropSinkSeriesLimit, d.SinkLimit)
	e.env.Metrics.Dropped(ExpositionKey, telemetry.DropSuperseded, d.Superseded)
}

func (e *Exposition) setSeriesGauge() {
	if e.env.Metrics != nil {
		e.env.Metrics.SinkSeries.WithLabelValues(ExpositionKey).Set(float64(e.series.Len()))
	}
}

// Flush implements sink.Sink; a scrape reads the series directly, so there is
// nothing to send.
func (e *Exposition) Flush(context.Context) error { return nil }

// Close implements sink.Sink: it stops expiring series. The collector stays
// registered, so that a scrape during shutdown still sees the last values.
func (e *Exposition) Close(ctx context.Context) error {
	e.once.Do(func() { close(e.stop) })
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Exposition) expireLoop() {
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
func (e *Exposition) Len() int { return e.series.Len() }

// Describe implements prometheus.Collector with the metrics bound now. The
// collector registered by NewExposition describes nothing (it is unchecked,
// since definitions change at run time); Describe lets a test register the
// exposition on a pedantic registry to have every check applied.
func (e *Exposition) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range e.families() {
		ch <- f.desc
	}
}

func (e *Exposition) families() []*family {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*family, 0, len(e.fams))
	for _, f := range e.fams {
		out = append(out, f)
	}
	return out
}

// Collect implements prometheus.Collector. Each metric's series are copied
// under the registry lock (values only: labels are shared), and the
// client_golang metrics are built after the lock is released.
func (e *Exposition) Collect(ch chan<- prometheus.Metric) {
	for _, f := range e.families() {
		f.collect(e.series, ch)
	}
}

func (f *family) collect(reg *series.Registry[*state], ch chan<- prometheus.Metric) {
	snap := make([]sample, 0, f.hint.Load())
	var counts []uint64
	hist := f.kind == sink.Distribution
	if hist {
		counts = make([]uint64, 0, int(f.hint.Load())*len(f.bounds))
	}
	reg.EachIn(f.fam, func(s *series.Series[*state]) {
		st := s.State
		if st.labels == nil {
			return
		}
		snap = append(snap, sample{f: f, labels: st.labels, sum: st.Sum, count: st.Count})
		if hist {
			counts = st.AppendCumulative(counts)
		}
	})
	f.hint.Store(int64(len(snap)))
	n := len(f.bounds)
	for i := range snap {
		if hist {
			snap[i].buckets = counts[i*n : (i+1)*n : (i+1)*n]
		}
		ch <- &snap[i]
	}
}

// sample is one series as a client_golang metric.
type sample struct {
	f       *family
	labels  []*dto.LabelPair
	sum     float64
	count   uint64
	buckets []uint64
}

// Desc implements prometheus.Metric.
func (s *sample) Desc() *prometheus.Desc { return s.f.desc }

// Write implements prometheus.Metric.
func (s *sample) Write(m *dto.Metric) error {
	m.Label = s.labels
	switch s.f.kind {
	case sink.Counter:
		m.Counter = &dto.Counter{Value: &s.sum}
	case sink.Gauge:
		m.Gauge = &dto.Gauge{Value: &s.sum}
	default:
		buckets := make([]dto.Bucket, len(s.buckets))
		ptrs := make([]*dto.Bucket, len(s.buckets))
		for i := range buckets {
			b := &buckets[i]
			b.CumulativeCount = &s.buckets[i]
			b.UpperBound = &s.f.bounds[i]
			ptrs[i] = b
		}
		m.Histogram = &dto.Histogram{SampleCount: &s.count, SampleSum: &s.sum, Bucket: ptrs}
	}
	return nil
}

// uncheckedCollector is what NewExposition registers: it describes nothing,
// which makes it an unchecked collector whose metrics may change.
type uncheckedCollector struct{ e *Exposition }

func (uncheckedCollector) Describe(chan<- *prometheus.Desc)      {}
func (c uncheckedCollector) Collect(ch chan<- prometheus.Metric) { c.e.Collect(ch) }

// expositionFactory routes handler configs to the one exposition.
type expositionFactory struct{ e *Exposition }

// NewExpositionFactory is the sink.Factory of the exposition: every config
// whose params enable exposition shares e, which the adapter adds to its sink
// set as a permanent sink.
func NewExpositionFactory(e *Exposition) sink.Factory { return expositionFactory{e} }

// Key implements sink.Factory.
func (expositionFactory) Key(p *config.Params) string {
	if config.SinksOf(p).Exposition {
		return ExpositionKey
	}
	return ""
}

// Check implements sink.Factory: every metric must have valid, distinct
// Prometheus names.
func (expositionFactory) Check(_ *config.Params, metrics []*sink.Metric) error {
	if err := naming.CheckAll(metrics); err != nil {
		return fmt.Errorf("prometheus: %w", err)
	}
	for i, m := range metrics {
		if _, err := checkMetric(m); err != nil {
			return fmt.Errorf("prometheus: metrics[%d]: %w", i, err)
		}
	}
	return nil
}

// New implements sink.Factory.
func (f expositionFactory) New(*config.Params) (sink.Sink, error) { return f.e, nil }
