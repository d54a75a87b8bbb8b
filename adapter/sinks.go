package adapter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshmetrics/meshmetrics/adapter/librato"
	promsink "github.com/meshmetrics/meshmetrics/adapter/prometheus"
	"github.com/meshmetrics/meshmetrics/adapter/prometheus/remotewrite"
	"github.com/meshmetrics/meshmetrics/adapter/sink"
)

// defaultSinks wires the built-in sinks: the Prometheus exposition (one,
// permanent, served on /metrics), remote write and Librato (one per
// destination, built when a handler config names it).
func defaultSinks(env sink.Env, reg *prometheus.Registry) (map[string]sink.Sink, []sink.Factory, error) {
	expo := promsink.NewExposition(env)
	return map[string]sink.Sink{promsink.ExpositionKey: expo},
		[]sink.Factory{promsink.NewExpositionFactory(expo), remotewrite.NewFactory(env), librato.NewFactory(env)}, nil
}
