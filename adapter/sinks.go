package adapter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/exposition"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite"
	"github.com/meshmetrics/meshmetrics/config"
)

// defaultSinks wires the built-in sinks: the Prometheus exposition (one,
// permanent, served on /metrics), remote write, Librato and OTLP (one per
// destination, built when a handler config names it).
func defaultSinks(env sinks.Env, reg *prometheus.Registry) (map[string]sinks.Sink, []sinks.Factory, error) {
	expo := exposition.New(env)
	return map[string]sinks.Sink{exposition.Key: expo}, builtinFactories(env, expo), nil
}

// builtinFactories are the built-in backends. A new backend is its own
// package and one more line here.
func builtinFactories(env sinks.Env, expo *exposition.Sink) []sinks.Factory {
	return []sinks.Factory{
		exposition.NewFactory(expo),
		remotewrite.NewFactory(env),
		librato.NewFactory(env),
		otlp.NewFactory(env),
	}
}

// NormalizeParams normalizes handler params as a handler build does: the
// generic defaults and rules of config.Normalize, then each built-in
// backend's own for its block, every problem reported with its field path.
// It builds no sink (deploy's tests check the shipped configs with it).
func NormalizeParams(in *config.Params) (*config.Params, error) {
	p, err := config.Normalize(in)
	if err != nil {
		return nil, err
	}
	env := sinks.Env{Secrets: &logging.Secrets{}}
	if _, err := sinks.Resolve(p, builtinFactories(env, nil)); err != nil {
		return nil, err
	}
	return p, nil
}
