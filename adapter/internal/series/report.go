package series

import (
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// Report counts what Apply dropped in sink's
// meshmetrics_instances_dropped_total, and logs each metric's first drop at
// a cap (Drops.Limited), rate-limited: which metric, which cap and its
// value, and what to change, so that a loss is never only a counter.
func Report(env sinks.Env, sink string, d Drops) {
	if m := env.Metrics; m != nil && d.Total() > 0 {
		m.Dropped(sink, telemetry.DropSeriesLimit, d.FamilyLimit)
		m.Dropped(sink, telemetry.DropSinkSeriesLimit, d.SinkLimit)
		m.Dropped(sink, telemetry.DropSuperseded, d.Superseded)
	}
	if env.Limiter == nil {
		return
	}
	for _, l := range d.Limited {
		fields := logrus.Fields{"sink": sink, "metric": l.Metric, "limit": l.Limit}
		if l.SinkLimit {
			fields["reason"] = telemetry.DropSinkSeriesLimit
			// One line per sink per interval: a full sink stops every metric.
			env.Limiter.Log(logrus.WarnLevel, "sink-series-limit|"+sink, fields, fmt.Sprintf(
				"sink %s holds --max-series (%d) series: instances of new series of %s (and of any other metric) are dropped and counted in "+
					"meshmetrics_instances_dropped_total{reason=%q}; raise --max-series with the memory limit "+
					"(docs/params.md, Limits), or expire idle series with metrics_expiration_policy",
				sink, l.Limit, l.Metric, telemetry.DropSinkSeriesLimit))
			continue
		}
		fields["reason"] = telemetry.DropSeriesLimit
		env.Limiter.Log(logrus.WarnLevel, "series-limit|"+sink+"|"+l.Metric, fields, fmt.Sprintf(
			"metric %s reached its handler's limits.max_series_per_metric (%d) in sink %s: instances of new series are dropped and counted in "+
				"meshmetrics_instances_dropped_total{reason=%q}; raise or remove limits.max_series_per_metric, or expire idle series with metrics_expiration_policy",
			l.Metric, l.Limit, sink, telemetry.DropSeriesLimit))
	}
}
