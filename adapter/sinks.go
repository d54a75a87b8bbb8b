package adapter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/exposition"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite"
)

// defaultSinks wires the built-in sinks: the Prometheus exposition (one,
// permanent, served on /metrics), remote write and Librato (one per
// destination, built when a handler config names it).
func defaultSinks(env sinks.Env, reg *prometheus.Registry) (map[string]sinks.Sink, []sinks.Factory, error) {
	expo := exposition.New(env)
	return map[string]sinks.Sink{exposition.Key: expo},
		[]sinks.Factory{exposition.NewFactory(expo), remotewrite.NewFactory(env), librato.NewFactory(env)}, nil
}
