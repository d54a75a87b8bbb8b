// Package sinktest is a sink for tests: it records every sample it consumes
// and keeps per-series aggregates, and can be made slow or strict to test
// what happens in front of a sink.
package sinktest

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/series"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/config"
)

// Aggregate is what the sink knows of one series.
type Aggregate struct {
	Count         int
	Sum, Min, Max float64
	Last          float64
}

// Sample is one consumed sample.
type Sample struct {
	Metric string
	Labels []string
	Value  float64
	Time   time.Time
}

// Sink records what it consumes.
type Sink struct {
	name string
	reg  *series.Registry[*Aggregate]

	// ConsumeDelay slows Consume down, to fill the queue in front of it.
	ConsumeDelay time.Duration
	// BindErr, if set, refuses every Bind with it.
	BindErr error
	// DefaultUnit is the duration unit of metrics that set none (seconds).
	DefaultUnit config.DurationUnit

	mu       sync.Mutex
	samples  []Sample
	drops    series.Drops
	flushes  int
	closed   bool
	consumed chan struct{}
}

// New makes a recording sink.
func New(name string) *Sink {
	return &Sink{
		name:     name,
		reg:      series.New(series.Options[*Aggregate]{NewState: func(*series.Family[*Aggregate]) *Aggregate { return &Aggregate{} }}),
		consumed: make(chan struct{}, 1<<16),
	}
}

// MetricName is how the sink names a metric: namespace_name.
func MetricName(m *sinks.Metric) string {
	if m.Namespace == "" {
		return m.Name
	}
	return m.Namespace + "_" + m.Name
}

// Name implements sinks.Sink.
func (s *Sink) Name() string { return s.name }

// Bind implements sinks.Sink.
func (s *Sink) Bind(m *sinks.Metric) (sinks.Binding, error) {
	if s.BindErr != nil {
		return nil, s.BindErr
	}
	return s.reg.Bind(MetricName(m), m, sinks.DurationScale(m.DurationUnit, s.DefaultUnit)), nil
}

// Unbind implements sinks.Sink.
func (s *Sink) Unbind(b sinks.Binding) { s.reg.Unbind(b) }

// Consume implements sinks.Sink.
func (s *Sink) Consume(b *sinks.Batch) {
	if s.ConsumeDelay > 0 {
		time.Sleep(s.ConsumeDelay)
	}
	var got []Sample
	d := s.reg.Apply(b, func(f *series.Family[*Aggregate], ser *series.Series[*Aggregate], v float64) {
		a := ser.State
		if a.Count == 0 {
			a.Min, a.Max = v, v
		}
		a.Count++
		a.Sum += v
		a.Min, a.Max, a.Last = math.Min(a.Min, v), math.Max(a.Max, v), v
		got = append(got, Sample{Metric: f.Name, Labels: append([]string(nil), ser.Labels...), Value: v, Time: b.Time})
	})
	s.mu.Lock()
	s.samples = append(s.samples, got...)
	s.drops.FamilyLimit += d.FamilyLimit
	s.drops.SinkLimit += d.SinkLimit
	s.drops.Superseded += d.Superseded
	s.mu.Unlock()
	select {
	case s.consumed <- struct{}{}:
	default:
	}
}

// Flush implements sinks.Sink.
func (s *Sink) Flush(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes++
	return nil
}

// Close implements sinks.Sink.
func (s *Sink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes++
	s.closed = true
	return nil
}

// Samples returns every sample consumed so far.
func (s *Sink) Samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sample(nil), s.samples...)
}

// Drops returns what the registry refused.
func (s *Sink) Drops() series.Drops {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drops
}

// Closed reports whether Close was called, and how many flushes there were.
func (s *Sink) Closed() (closed bool, flushes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed, s.flushes
}

// Series returns the aggregate of every live series, keyed by
// "metric{label,label}".
func (s *Sink) Series() map[string]Aggregate {
	out := map[string]Aggregate{}
	s.reg.Each(func(f *series.Family[*Aggregate], ser *series.Series[*Aggregate]) {
		out[Key(f.Name, ser.Labels...)] = *ser.State
	})
	return out
}

// Key renders a series key as Series does.
func Key(metric string, labels ...string) string {
	return metric + "{" + strings.Join(labels, ",") + "}"
}

// WaitSamples waits until at least n samples were consumed.
func (s *Sink) WaitSamples(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		got := len(s.samples)
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-s.consumed:
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("got %d samples, want %d: %w", got, n, ctx.Err())
		}
	}
}

// Factory makes the recording sinks of a test. Every handler config goes to
// one shared sink unless Route is set.
type Factory struct {
	mu    sync.Mutex
	sinks map[string]*Sink
	// Route picks the destination key of a config ("" = not this sink).
	Route func(p *config.Params) string
	// CheckErr, if set, fails Check.
	CheckErr error
	// Setup adjusts each new sink.
	Setup func(*Sink)
}

// NewFactory makes a factory routing every config to the sink "test".
func NewFactory() *Factory {
	return &Factory{sinks: map[string]*Sink{}, Route: func(*config.Params) string { return "test" }}
}

// Configured implements sinks.Factory: a config is this backend's when
// Route routes it.
func (f *Factory) Configured(p *config.Params) bool { return f.Route(p) != "" }

// Normalize implements sinks.Factory: the recording sink has no block.
func (f *Factory) Normalize(*config.Params) config.FieldErrors { return nil }

// Key implements sinks.Factory.
func (f *Factory) Key(p *config.Params) string { return f.Route(p) }

// Check implements sinks.Factory.
func (f *Factory) Check(*config.Params, []*sinks.Metric) error { return f.CheckErr }

// New implements sinks.Factory.
func (f *Factory) New(p *config.Params) (sinks.Sink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := f.Route(p)
	s := New(key)
	if f.Setup != nil {
		f.Setup(s)
	}
	f.sinks[key] = s
	return s, nil
}

// Sink returns the latest sink built for key.
func (f *Factory) Sink(key string) *Sink {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sinks[key]
}

// Keys lists the keys of the sinks built so far.
func (f *Factory) Keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.sinks))
	for k := range f.sinks {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Clock is a manual clock for a sink's Env.Now, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
