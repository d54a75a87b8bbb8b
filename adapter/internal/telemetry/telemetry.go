// Package telemetry holds the adapter's own metrics: what it received,
// refused and dropped (by reason), its queues, its handler cache and the
// latency of HandleMetric. They are served on /metrics next to the series of
// the Prometheus sink, under the meshmetrics_ prefix.
package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// QueueSource reports the queues between HandleMetric and the sinks
// (sink.Set is one).
type QueueSource interface {
	Stats() []QueueStat
}

// QueueStat is one sink's queue.
type QueueStat struct {
	Sink     string
	Depth    int
	Capacity int
}

// Metrics are the adapter's own metrics. Build one per adapter with New.
type Metrics struct {
	InstancesReceived prometheus.Counter
	InstancesAccepted prometheus.Counter
	InstancesRejected *prometheus.CounterVec
	InstancesDropped  *prometheus.CounterVec
	Requests          *prometheus.CounterVec
	HandleLatency     prometheus.Histogram
	ConfigErrors      *prometheus.CounterVec
	HandlersBuilt     prometheus.Counter
	HandlersClosed    prometheus.Counter
	SinkSends         *prometheus.CounterVec
	SinkSendLatency   *prometheus.HistogramVec
	SinkSeries        *prometheus.GaugeVec
	// SinkSeriesLimit is the cap of SinkSeries (--max-series), so that
	// "series held vs the cap" is one division in an alert.
	SinkSeriesLimit   *prometheus.GaugeVec
	LastConfigSuccess prometheus.Gauge
	// LibratoSanitized counts what the Librato sink had to alter to meet the
	// API's name and tag rules (reasons in adapter/internal/sinks/librato).
	LibratoSanitized *prometheus.CounterVec
	AuthRefused      *prometheus.CounterVec
	// LabelsTruncated counts label values cut to max_label_value_length.
	LabelsTruncated prometheus.Counter
	// DedupIDsReused counts calls whose dedup_id was seen within the window
	// (counted all the same unless deduplication is on and the content
	// matches too): a real Mixer reuses ids under load.
	DedupIDsReused prometheus.Counter
}

// New registers the adapter's metrics, and the Go and process collectors, on
// reg. handlerCacheSize and queues are read at scrape time.
func New(reg prometheus.Registerer, handlerCacheSize func() int, queues QueueSource) *Metrics {
	m := &Metrics{
		InstancesReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshmetrics_instances_received_total",
			Help: "Metric instances received in HandleMetric calls.",
		}),
		InstancesAccepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshmetrics_instances_accepted_total",
			Help: "Instances accepted and handed to the sinks (once per instance, whatever the number of sinks).",
		}),
		InstancesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshmetrics_instances_rejected_total",
			Help: "Instances refused with an error to Mixer, by reason.",
		}, []string{"reason"}),
		InstancesDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshmetrics_instances_dropped_total",
			Help: "Instances accepted and then not delivered by a sink, by sink and reason.",
		}, []string{"sink", "reason"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshmetrics_handle_metric_requests_total",
			Help: "HandleMetric calls by gRPC status code.",
		}, []string{"code"}),
		HandleLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshmetrics_handle_metric_duration_seconds",
			Help:    "Time spent in HandleMetric, from decoded request to reply.",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1},
		}),
		ConfigErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshmetrics_config_errors_total",
			Help: "Handler configs refused, by reason (decode, validation, sink).",
		}, []string{"reason"}),
		HandlersBuilt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshmetrics_handlers_built_total",
			Help: "Handlers built from distinct handler configs.",
		}),
		HandlersClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshmetrics_handlers_closed_total",
			Help: "Handlers closed after idling or eviction.",
		}),
		SinkSends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshmetrics_sink_requests_total",
			Help: "Requests push sinks made to their backends, by sink and result (ok, retry, rejected, failed).",
		}, []string{"sink", "result"}),
		SinkSendLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshmetrics_sink_request_duration_seconds",
			Help:    "Duration of backend requests by push sinks, retries included.",
			Buckets: prometheus.DefBuckets,
		}, []string{"sink"}),
		SinkSeries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshmetrics_sink_series",
			Help: "Series held by each sink.",
		}, []string{"sink"}),
		SinkSeriesLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshmetrics_sink_series_limit",
			Help: "Series each sink may hold (--max-series); beyond, instances of new series are dropped (reason sink_series_limit).",
		}, []string{"sink"}),
		LastConfigSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshmetrics_last_config_success_timestamp_seconds",
			Help: "When a handler config was last built successfully.",
		}),
		LabelsTruncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshmetrics_label_values_truncated_total",
			Help: "Label values cut to the handler's limits.max_label_value_length (the series is kept, with the cut value).",
		}),
		DedupIDsReused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshmetrics_dedup_ids_reused_total",
			Help: "HandleMetric calls whose dedup_id an earlier call of the same handler config carried within the window; counted all the same unless --dedup-ttl is set and their content matched too (Mixer reuses ids under load).",
		}),
		AuthRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshmetrics_auth_refused_total",
			Help: "Callers refused: no or wrong token, no client certificate, SPIFFE ID not allowed.",
		}, []string{"reason"}),
		LibratoSanitized: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshmetrics_librato_sanitized_total",
			Help: "Metric names and series the Librato sink altered to meet the API's name and tag rules, by sink and reason.",
		}, []string{"sink", "reason"}),
	}
	reg.MustRegister(m.InstancesReceived, m.InstancesAccepted, m.InstancesRejected, m.InstancesDropped, m.Requests,
		m.HandleLatency, m.ConfigErrors, m.HandlersBuilt, m.HandlersClosed, m.SinkSends, m.SinkSendLatency,
		m.SinkSeries, m.SinkSeriesLimit, m.LastConfigSuccess, m.LibratoSanitized, m.AuthRefused, m.LabelsTruncated, m.DedupIDsReused)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshmetrics_handler_cache_size",
		Help: "Handlers built from distinct handler configs and currently cached.",
	}, func() float64 { return float64(handlerCacheSize()) }))
	reg.MustRegister(&queueCollector{src: queues,
		depth: prometheus.NewDesc("meshmetrics_queue_depth", "Instances waiting between HandleMetric and a sink.", []string{"sink"}, nil),
		capacity: prometheus.NewDesc("meshmetrics_queue_capacity", "Instances that may wait between HandleMetric and a sink before new ones are dropped.",
			[]string{"sink"}, nil),
	})
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every reason exists at 0 from the start: rate() and increase() miss the
	// first event of a series that appears with it, and alerts need them.
	for _, r := range RejectionReasons() {
		m.InstancesRejected.WithLabelValues(r)
	}
	for _, r := range ConfigErrorReasons() {
		m.ConfigErrors.WithLabelValues(r)
	}
	for _, r := range AuthRefusedReasons() {
		m.AuthRefused.WithLabelValues(r)
	}
	return m
}

// Dropped counts n instances that sink accepted and could not deliver.
func (m *Metrics) Dropped(sink, reason string, n int) {
	if n > 0 {
		m.InstancesDropped.WithLabelValues(sink, reason).Add(float64(n))
	}
}

// InitSink makes a new sink's series gauges exist: the series it holds, at
// 0 until it reports, and its cap.
func (m *Metrics) InitSink(sink string, maxSeries int) {
	m.SinkSeries.WithLabelValues(sink)
	m.SinkSeriesLimit.WithLabelValues(sink).Set(float64(maxSeries))
}

// SinkClosed removes a closed sink's series gauges.
func (m *Metrics) SinkClosed(sink string) {
	m.SinkSeries.DeleteLabelValues(sink)
	m.SinkSeriesLimit.DeleteLabelValues(sink)
}

// InitDropped makes the drop counters of sink exist, at 0, for reasons:
// an alert on them then works before the first drop.
func (m *Metrics) InitDropped(sink string, reasons ...string) {
	for _, r := range reasons {
		m.InstancesDropped.WithLabelValues(sink, r)
	}
}

type queueCollector struct {
	src             QueueSource
	depth, capacity *prometheus.Desc
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.capacity
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	for _, q := range c.src.Stats() {
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(q.Depth), q.Sink)
		ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(q.Capacity), q.Sink)
	}
}
