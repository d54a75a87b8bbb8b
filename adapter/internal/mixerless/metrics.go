package mixerless

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// Reasons an entry, a rule evaluation or an instance was skipped
// (meshmetrics_accesslog_skipped_total), besides the handler's own
// rejection reasons (telemetry.Reason*).
const (
	SkipMalformedMessage = "malformed_message"  // messages: the stream goes on
	SkipTooManyEntries   = "too_many_entries"   // entries of a message over the cap
	SkipMalformedEntry   = "malformed_entry"    // entries
	SkipMatchError       = "match_error"        // rule evaluations: no match, as in Mixer
	SkipInstanceError    = "instance_error"     // instances that could not be built
	SkipQueueFull        = "queue_full"         // instances a sink queue refused
	SkipForwardQueueFull = "forward_queue_full" // instances for another adapter, its queue full
	SkipBadHandlerConfig = "bad_handler_config" // instances whose handler config failed to build
)

var skipReasons = []string{SkipMalformedMessage, SkipTooManyEntries, SkipMalformedEntry, SkipMatchError, SkipInstanceError,
	SkipQueueFull, SkipForwardQueueFull, SkipBadHandlerConfig, telemetry.ReasonUnknownInstance, telemetry.ReasonMissingValue,
	telemetry.ReasonNotNumeric, telemetry.ReasonNonFinite, telemetry.ReasonNegativeCounter, telemetry.ReasonSuperseded}

// Metrics are the Mixer-less mode's own metrics. Every series that does not
// name a handler exists at 0 from the start; handler series appear with the
// config that defines the handler.
type Metrics struct {
	EntriesReceived     *prometheus.CounterVec
	BagsBuilt           prometheus.Counter
	InstancesDispatched *prometheus.CounterVec
	InstancesForwarded  *prometheus.CounterVec
	Skipped             *prometheus.CounterVec
	ConfigReloads       *prometheus.CounterVec
	LastReloadOK        prometheus.Gauge
	LastReloadSuccess   prometheus.Gauge
}

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		EntriesReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshmetrics_accesslog_entries_received_total",
			Help: "Envoy access-log entries received, by protocol (http, tcp) and Access Log Service version (v2, v3).",
		}, []string{"protocol", "api"}),
		BagsBuilt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshmetrics_accesslog_bags_built_total",
			Help: "Attribute bags built from access-log entries and evaluated against the rules.",
		}),
		InstancesDispatched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshmetrics_accesslog_instances_dispatched_total",
			Help: "Instances built from access-log entries and accepted by a meshmetrics handler, by handler.",
		}, []string{"handler"}),
		InstancesForwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshmetrics_accesslog_instances_forwarded_total",
			Help: "Instances sent to another out-of-process adapter in HandleMetric calls, by handler and result (ok, error).",
		}, []string{"handler", "result"}),
		Skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshmetrics_accesslog_skipped_total",
			Help: "Messages, entries, rule evaluations or instances of the access-log path that were skipped, by reason (see docs/mixerless.md).",
		}, []string{"reason"}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshmetrics_config_reloads_total",
			Help: "Loads of the config directory, by result (success, failure). A failed one leaves the last good config running.",
		}, []string{"result"}),
		LastReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshmetrics_config_last_reload_successful",
			Help: "1 when the last load of the config directory succeeded, 0 when it failed (the last good config keeps running).",
		}),
		LastReloadSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshmetrics_config_last_reload_success_timestamp_seconds",
			Help: "When the config directory was last loaded successfully.",
		}),
	}
	reg.MustRegister(m.EntriesReceived, m.BagsBuilt, m.InstancesDispatched, m.InstancesForwarded, m.Skipped,
		m.ConfigReloads, m.LastReloadOK, m.LastReloadSuccess)
	for _, p := range []string{"http", "tcp"} {
		for _, api := range []string{"v2", "v3"} {
			m.EntriesReceived.WithLabelValues(p, api)
		}
	}
	for _, r := range skipReasons {
		m.Skipped.WithLabelValues(r)
	}
	m.ConfigReloads.WithLabelValues("success")
	m.ConfigReloads.WithLabelValues("failure")
	return m
}

// handlerSeries makes the series of a config's handlers exist at 0.
func (m *Metrics) handlerSeries(c *Config) {
	local, remote := c.Handlers()
	for _, h := range local {
		m.InstancesDispatched.WithLabelValues(h)
	}
	for _, h := range remote {
		m.InstancesForwarded.WithLabelValues(h, "ok")
		m.InstancesForwarded.WithLabelValues(h, "error")
	}
}
