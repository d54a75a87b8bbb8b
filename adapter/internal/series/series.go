// Package series keeps the series of one sink: a family per metric name, its
// series by label values, caps per family and per sink, idle expiry, and the
// rule that a newer handler config's different definition of a name
// supersedes the older one instead of mixing with it.
//
// Series belong to the sink, not to the handler configs that write them: a
// family whose last handler config is closed (evicted from the handler
// cache, idle) keeps its series, which expire by their metric's
// metrics_expiration_policy or stay while the sink lives, and a handler
// config binding the same definition again finds them where they were. A
// family unbound and emptied by expiry is removed.
//
// The state of a series (a counter, a histogram, a period's aggregate) is the
// sink's business: Registry is generic over it.
package series

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
)

// Series is one label set of one metric.
type Series[S any] struct {
	// Key is the encoded label values (sinks.Batch.Key); Labels alias it.
	Key    string
	Labels []string
	// LastSeen is the time of the latest sample, in Unix nanoseconds.
	LastSeen int64
	State    S
}

// Family is one metric of a sink and the Binding handlers record with.
type Family[S any] struct {
	Name   string
	Metric *sinks.Metric
	key    string
	scale  float64

	refs       int
	superseded atomic.Bool
	series     map[string]*Series[S]
	maxSeries  int
	// atFamilyLimit, atSinkLimit: a drop of that reason was reported since
	// the family last lost series (Drops.Limited names only the first).
	atFamilyLimit, atSinkLimit bool
	expiry                     time.Duration
	expiryCheck                time.Duration
	nextCheck                  int64
}

// Superseded implements sinks.Binding.
func (f *Family[S]) Superseded() bool { return f.superseded.Load() }

// DurationScale implements sinks.Binding.
func (f *Family[S]) DurationScale() float64 { return f.scale }

// Len is the number of series; call it under Registry.Each or Apply.
func (f *Family[S]) Len() int { return len(f.series) }

// RemoveReason says why a series left the registry.
type RemoveReason uint8

// The reasons for OnRemove.
const (
	// Expired: idle for longer than the metric's expiry.
	Expired RemoveReason = iota + 1
	// Superseded: a newer handler config redefined the metric (or, for a
	// family no handler config binds any more, a new definition wants a
	// name its series would write, Catalog).
	Superseded
)

func (r RemoveReason) String() string {
	return [...]string{"", "expired", "superseded"}[r]
}

// Drops counts the samples Apply could not record.
type Drops struct {
	// FamilyLimit: the metric's max_series_per_metric was reached.
	FamilyLimit int
	// SinkLimit: the sink's --max-series was reached.
	SinkLimit int
	// Superseded: the metric was redefined after the sample was accepted.
	Superseded int
	// Limited names the metrics that hit a cap for the first time since
	// they (or, for the sink's cap, any metric) last lost series: what a
	// sink logs (Report), so that each metric's loss is said once, not per
	// sample.
	Limited []Limited
}

// Limited is a metric's first drop at a cap.
type Limited struct {
	// Metric is the family's name in the sink.
	Metric string
	// SinkLimit: the sink's --max-series; else the metric's
	// max_series_per_metric.
	SinkLimit bool
	// Limit is the cap that was reached.
	Limit int
}

// Total is the number of dropped samples.
func (d Drops) Total() int { return d.FamilyLimit + d.SinkLimit + d.Superseded }

// Options configure a Registry.
type Options[S any] struct {
	// MaxSeries caps the series of the whole registry (0: no cap).
	MaxSeries int
	// NewState makes the state of a new series.
	NewState func(f *Family[S]) S
	// OnRemove, if set, sees every series removed, under the registry lock;
	// remote write sends stale markers from it.
	OnRemove func(f *Family[S], s *Series[S], why RemoveReason)
}

// Registry holds the families of one sink. All methods are safe for
// concurrent use; callbacks run under its lock and must not call back.
type Registry[S any] struct {
	opts Options[S]

	mu       sync.Mutex
	families map[string]*Family[S]
	total    int
}

// New makes an empty registry.
func New[S any](opts Options[S]) *Registry[S] {
	return &Registry[S]{opts: opts, families: map[string]*Family[S]{}}
}

// Bind returns the family for name, creating it, sharing it (same
// definition) or superseding a different definition. scale converts duration
// seconds to the metric's unit in this sink.
func (r *Registry[S]) Bind(name string, m *sinks.Metric, scale float64) *Family[S] {
	key := m.DefinitionKey()
	r.mu.Lock()
	defer r.mu.Unlock()
	if f, ok := r.families[name]; ok {
		if f.key == key {
			f.refs++
			// Limits follow the newest config without resetting series.
			f.Metric = m
			f.setLimits(m)
			return f
		}
		f.superseded.Store(true)
		r.removeFamily(f, Superseded)
	}
	f := &Family[S]{Name: name, Metric: m, key: key, scale: scale, refs: 1, series: map[string]*Series[S]{}}
	f.setLimits(m)
	r.families[name] = f
	return f
}

func (f *Family[S]) setLimits(m *sinks.Metric) {
	f.maxSeries = m.MaxSeries
	f.expiry = m.Expiry
	f.expiryCheck = m.ExpiryCheck
	if f.expiryCheck <= 0 {
		f.expiryCheck = f.expiry / 2
	}
}

// Unbind releases a binding from Bind. When the last one goes, the family
// stays with its series, which expire by their own rules (Expire); a family
// with no series left is removed.
func (r *Registry[S]) Unbind(b sinks.Binding) {
	f, ok := b.(*Family[S])
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	f.refs--
	if f.refs <= 0 && len(f.series) == 0 && r.families[f.Name] == f {
		delete(r.families, f.Name)
	}
}

// Bound reports whether a handler config binds f, and Contains whether f is
// still the registry's family of its name (not superseded, not removed
// once unbound and empty).
func (r *Registry[S]) Bound(f *Family[S]) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f.refs > 0
}

// Contains reports whether f is the registry's family of its name.
func (r *Registry[S]) Contains(f *Family[S]) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.families[f.Name] == f
}

// Supersede removes a family that no handler config binds any more, with
// its series (OnRemove sees them, as Superseded): a new definition needs a
// name its series would write. It reports false, removing nothing, while a
// handler config binds f.
func (r *Registry[S]) Supersede(f *Family[S]) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f.refs > 0 {
		return false
	}
	if r.families[f.Name] == f {
		f.superseded.Store(true)
		r.removeFamily(f, Superseded)
	}
	return true
}

func (r *Registry[S]) removeFamily(f *Family[S], why RemoveReason) {
	delete(r.families, f.Name)
	for _, s := range f.series {
		if r.opts.OnRemove != nil {
			r.opts.OnRemove(f, s, why)
		}
	}
	r.total -= len(f.series)
	f.series = map[string]*Series[S]{}
}

// Apply records a batch: for each sample it finds or creates the series
// (within the caps) and calls update with it. It returns what it dropped.
func (r *Registry[S]) Apply(b *sinks.Batch, update func(f *Family[S], s *Series[S], value float64)) Drops {
	var d Drops
	now := b.Time.UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	var current *Family[S] // checked already: a batch's samples mostly share a family
	for i := range b.Samples {
		smp := &b.Samples[i]
		f, ok := smp.Binding.(*Family[S])
		if !ok || f != current {
			if !ok || f.superseded.Load() || r.families[f.Name] != f {
				d.Superseded++
				continue
			}
			current = f
		}
		key := b.Key(smp)
		s, ok := f.series[string(key)]
		if !ok {
			switch {
			case f.maxSeries > 0 && len(f.series) >= f.maxSeries:
				d.FamilyLimit++
				if !f.atFamilyLimit {
					f.atFamilyLimit = true
					d.Limited = append(d.Limited, Limited{Metric: f.Name, Limit: f.maxSeries})
				}
				continue
			case r.opts.MaxSeries > 0 && r.total >= r.opts.MaxSeries:
				d.SinkLimit++
				if !f.atSinkLimit {
					f.atSinkLimit = true
					d.Limited = append(d.Limited, Limited{Metric: f.Name, SinkLimit: true, Limit: r.opts.MaxSeries})
				}
				continue
			}
			k := string(key)
			s = &Series[S]{Key: k, Labels: sinks.DecodeKey(k)}
			if r.opts.NewState != nil {
				s.State = r.opts.NewState(f)
			}
			f.series[k] = s
			r.total++
		}
		if now > s.LastSeen {
			s.LastSeen = now
		}
		update(f, s, smp.Value)
	}
	return d
}

// Expire removes the series that have been idle for longer than their
// metric's expiry, checking each family at most once per its check interval,
// and the families no handler config binds that have no series left. It
// returns how many series it removed.
func (r *Registry[S]) Expire(now time.Time) int {
	n := now.UnixNano()
	removed := 0
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, f := range r.families {
		if f.refs <= 0 && len(f.series) == 0 {
			delete(r.families, name)
			continue
		}
		if f.expiry <= 0 || n < f.nextCheck {
			continue
		}
		f.nextCheck = n + int64(f.expiryCheck)
		cutoff := n - int64(f.expiry)
		before := len(f.series)
		for k, s := range f.series {
			if s.LastSeen < cutoff {
				if r.opts.OnRemove != nil {
					r.opts.OnRemove(f, s, Expired)
				}
				delete(f.series, k)
				r.total--
				removed++
			}
		}
		if len(f.series) < before {
			f.atFamilyLimit = false // room again: a new drop is news
		}
	}
	if removed > 0 {
		for _, f := range r.families {
			f.atSinkLimit = false
		}
	}
	return removed
}

// Each calls fn for every family and each of its series, under the lock.
// Keep fn short: copy what is needed and format outside.
func (r *Registry[S]) Each(fn func(f *Family[S], s *Series[S])) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.families {
		for _, s := range f.series {
			fn(f, s)
		}
	}
}

// EachIn calls fn for every series of f, under the lock, so that a collector
// per family reads only its own series. It does nothing for a family that is
// no longer in the registry.
func (r *Registry[S]) EachIn(f *Family[S], fn func(s *Series[S])) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.families[f.Name] != f {
		return
	}
	for _, s := range f.series {
		fn(s)
	}
}

// Families calls fn for every family, under the lock.
func (r *Registry[S]) Families(fn func(f *Family[S])) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.families {
		fn(f)
	}
}

// Len is the number of series in the registry.
func (r *Registry[S]) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}
