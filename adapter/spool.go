package adapter

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// openSpool opens --spool-dir for the push sinks. Losses in destinations no
// sink has claimed yet (corrupt files found at start, requests of an
// earlier run evicted from the full spool) are counted under the sink name
// recorded with them, like any other drop.
func openSpool(o *Options, m *telemetry.Metrics, limiter *logging.Limiter, reg prometheus.Registerer) (*export.Spool, error) {
	sp, err := export.OpenSpool(export.SpoolOptions{
		Dir:      o.SpoolDir,
		MaxBytes: o.SpoolMaxBytes,
		OnDrop: func(sink, reason string, _, instances int, err error) {
			m.Dropped(sink, reason, instances)
			msg := "spooled request dropped (" + reason + ")"
			if err != nil {
				msg += ": " + err.Error()
			}
			limiter.Log(logrus.WarnLevel, "spool|"+sink+"|"+reason, logrus.Fields{"sink": sink, "instances": instances}, msg)
		},
		OnWriteError: func(sink string, err error) {
			limiter.Log(logrus.ErrorLevel, "spool-write|"+sink, logrus.Fields{"sink": sink},
				"cannot write to the spool, keeping the request in memory only: "+err.Error())
		},
	})
	if err != nil {
		return nil, err
	}
	reg.MustRegister(&spoolCollector{sp: sp,
		bytes:    prometheus.NewDesc("meshmetrics_spool_bytes", "Bytes of requests in the on-disk spool (--spool-dir), every destination together.", nil, nil),
		maxBytes: prometheus.NewDesc("meshmetrics_spool_max_bytes", "Cap of the spool (--spool-max-bytes); beyond, the oldest requests are dropped (spool_full).", nil, nil),
		requests: prometheus.NewDesc("meshmetrics_spool_requests", "Requests waiting in the spool, by sink; attached=false: waiting for a handler config naming the destination.",
			[]string{"sink", "attached"}, nil),
		instances: prometheus.NewDesc("meshmetrics_spool_instances", "Instances (samples for remote write) in the spooled requests, by sink.",
			[]string{"sink", "attached"}, nil),
		corrupt: prometheus.NewDesc("meshmetrics_spool_corrupt_files_total", "Spool files skipped because their length or checksum was wrong.",
			[]string{"sink"}, nil),
		writeErrors: prometheus.NewDesc("meshmetrics_spool_write_errors_total", "Requests that could not be written to the spool and were kept in memory only.",
			[]string{"sink"}, nil),
	})
	s := sp.Stats()
	requests, instances := 0, 0
	for _, st := range s {
		requests += st.Requests
		instances += st.Instances
	}
	o.Log.WithFields(logrus.Fields{"dir": sp.Dir(), "max_bytes": sp.MaxBytes(), "requests": requests, "instances": instances,
		"destinations": len(s)}).Info("spool opened; requests of an earlier run are sent when a handler config names their destination")
	return sp, nil
}

type spoolCollector struct {
	sp                                                         *export.Spool
	bytes, maxBytes, requests, instances, corrupt, writeErrors *prometheus.Desc
}

func (c *spoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.bytes, c.maxBytes, c.requests, c.instances, c.corrupt, c.writeErrors} {
		ch <- d
	}
}

func (c *spoolCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(c.sp.Bytes()))
	ch <- prometheus.MustNewConstMetric(c.maxBytes, prometheus.GaugeValue, float64(c.sp.MaxBytes()))
	for _, st := range c.sp.Stats() {
		attached := "false"
		if st.Attached {
			attached = "true"
		}
		if st.Requests > 0 {
			ch <- prometheus.MustNewConstMetric(c.requests, prometheus.GaugeValue, float64(st.Requests), st.Sink, attached)
			ch <- prometheus.MustNewConstMetric(c.instances, prometheus.GaugeValue, float64(st.Instances), st.Sink, attached)
		}
		if st.CorruptFiles > 0 {
			ch <- prometheus.MustNewConstMetric(c.corrupt, prometheus.CounterValue, float64(st.CorruptFiles), st.Sink)
		}
		if st.WriteErrors > 0 {
			ch <- prometheus.MustNewConstMetric(c.writeErrors, prometheus.CounterValue, float64(st.WriteErrors), st.Sink)
		}
	}
}
