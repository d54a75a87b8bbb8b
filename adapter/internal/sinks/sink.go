// Package sinks defines what a backend implements to receive metric samples,
// and the bounded, non-blocking queue that carries samples from HandleMetric
// to each backend, so that a slow or failing backend never stalls Mixer or
// another backend.
package sinks

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/meshmetrics/meshmetrics/config"
)

// Kind is how samples of a metric combine.
type Kind uint8

// The metric kinds of config.Params_MetricInfo.
const (
	Gauge Kind = iota + 1
	Counter
	Distribution
)

func (k Kind) String() string {
	switch k {
	case Gauge:
		return "gauge"
	case Counter:
		return "counter"
	case Distribution:
		return "distribution"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Metric is one metric definition of a handler config, resolved: defaults
// applied and buckets computed. Sinks derive their own names from it.
type Metric struct {
	// Namespace and Name as configured (not yet sanitised for a backend).
	Namespace   string
	Name        string
	Description string
	Kind        Kind
	// LabelNames are the label names in order. Each sample carries one value
	// per name. Unused when Implicit.
	LabelNames []string
	// Implicit metrics come from a handler without a metrics list: their
	// samples carry name/value pairs (every dimension, sorted by name).
	Implicit bool
	// Buckets are a Distribution's finite upper bounds.
	Buckets []float64
	// DurationUnit as configured; UNSPECIFIED lets the sink choose its default.
	DurationUnit config.DurationUnit

	// Limits: they may change without redefining the metric.
	MaxSeries int
	// Expiry removes series idle for this long; 0 keeps them.
	Expiry time.Duration
	// ExpiryCheck is how often idle series are looked for.
	ExpiryCheck time.Duration
}

// DefinitionKey identifies everything that shapes a metric's series: two
// handler configs with the same key share the series, and a different key
// under the same name redefines the metric. Limits are not part of it.
func (m *Metric) DefinitionKey() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q|%q|%q|%d|%v|%q|%v|%d", m.Namespace, m.Name, m.Description, m.Kind, m.Implicit, m.LabelNames, m.Buckets, m.DurationUnit)
	return b.String()
}

// Binding is a sink's handle on one metric, returned by Bind and carried by
// every sample of that metric.
type Binding interface {
	// Superseded reports that a newer handler config has since defined the
	// same metric differently in this sink. Samples for a superseded binding
	// are refused (InvalidArgument) so that the two definitions never mix.
	Superseded() bool
	// DurationScale converts a duration in seconds to the metric's unit in
	// this sink.
	DurationScale() float64
}

// Sink is a backend. HandleMetric never calls it directly: it goes through a
// Queue, whose single goroutine calls Consume.
type Sink interface {
	// Name identifies the sink in logs and in the adapter's own metrics. It
	// must not contain secrets.
	Name() string
	// Bind registers a metric for a handler being built. An error rejects
	// the handler config (InvalidArgument).
	Bind(m *Metric) (Binding, error)
	// Unbind releases a Binding when its handler is closed.
	Unbind(b Binding)
	// Consume applies a batch of samples. It is called from one goroutine
	// and must not block on I/O: push sinks aggregate here and send from
	// their own goroutines. The batch is reused once Consume returns.
	Consume(b *Batch)
	// Flush sends whatever is pending now (push sinks).
	Flush(ctx context.Context) error
	// Close flushes and stops the sink. Nothing is consumed after Close.
	Close(ctx context.Context) error
}

// Reloader is a sink that holds credentials read from files (a token, a
// password): Reload re-reads them now, whether or not they look changed
// (SIGHUP), keeping the last good value when a file cannot be read. The
// error names the file, never its content.
type Reloader interface {
	Reload() error
}

// Factory builds the sinks of one backend kind from handler params. The
// backend owns its block of the params: its defaults, its rules and its
// destination key. A new backend is its own package plus one line in
// adapter/sinks.go.
type Factory interface {
	// Configured reports whether p has this backend's block, even one that
	// sends nowhere (prometheus with exposition off and no remote write).
	Configured(p *config.Params) bool
	// Normalize fills in the defaults of the backend's block in p and
	// reports every problem with its field path ("librato.period").
	// Resolve calls it for every configured backend (and the default one);
	// it must be idempotent.
	Normalize(p *config.Params) config.FieldErrors
	// Key identifies the destination normalized p sends to, or "" when p
	// does not use this backend. Handlers whose params give the same key
	// share one sink. It must not contain secrets.
	Key(p *config.Params) string
	// Check validates p and its metrics against the backend's rules without
	// side effects: InfrastructureBackend.Validate uses it, and New must not
	// fail where Check passed.
	Check(p *config.Params, metrics []*Metric) error
	// New builds the sink for p's destination.
	New(p *config.Params) (Sink, error)
}

// Default marks the factory used when a config configures no backend at
// all (the Prometheus exposition, as Istio's own adapter does).
type Default interface {
	Factory
	// IsDefault is a marker.
	IsDefault()
}

// Use is a factory a config sends to, with its destination key.
type Use struct {
	Factory Factory
	Key     string
}

// Resolve normalizes the backend blocks of p (already through
// config.Normalize) and returns the backends it sends to, in factory
// order: every configured backend whose key is not empty, or, when no
// backend is configured at all, the default one. Errors are
// config.FieldErrors with their field paths, or an error wrapping
// config.ErrInvalid when p sends nowhere.
func Resolve(p *config.Params, factories []Factory) ([]Use, error) {
	var candidates []Factory
	for _, f := range factories {
		if f.Configured(p) {
			candidates = append(candidates, f)
		}
	}
	if len(candidates) == 0 {
		for _, f := range factories {
			if _, ok := f.(Default); ok {
				candidates = append(candidates, f)
			}
		}
	}
	var errs config.FieldErrors
	for _, f := range candidates {
		errs = append(errs, f.Normalize(p)...)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	var uses []Use
	for _, f := range candidates {
		if key := f.Key(p); key != "" {
			uses = append(uses, Use{Factory: f, Key: key})
		}
	}
	if len(uses) == 0 {
		// Only a backend turned off in its own block gives no key: the
		// exposition (prometheus.disable_exposition).
		return nil, config.FieldErrors{{Field: "prometheus.disable_exposition",
			Message: "the config sends to no sink: exposition is off and no other backend is configured (prometheus.remote_write.url, librato)"}}
	}
	return uses, nil
}

// DurationScale is the factor from seconds to the metric's duration unit,
// falling back to the sink's default unit when the metric sets none.
func DurationScale(unit, sinkDefault config.DurationUnit) float64 {
	if unit == config.DurationUnit_DURATION_UNIT_UNSPECIFIED {
		unit = sinkDefault
	}
	switch unit {
	case config.DurationUnit_MILLISECONDS:
		return 1e3
	case config.DurationUnit_MICROSECONDS:
		return 1e6
	case config.DurationUnit_NANOSECONDS:
		return 1e9
	}
	return 1
}
