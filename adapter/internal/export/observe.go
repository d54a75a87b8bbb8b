package export

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// Telemetry is where a Sender reports. Every field may be nil (tests).
type Telemetry struct {
	Metrics *telemetry.Metrics
	// Limiter logs drops and failures at most once per interval per sink
	// and reason; Log is used when there is none.
	Limiter *logging.Limiter
	Log     *logrus.Logger
	// Secrets are redacted from every message.
	Secrets *logging.Secrets
}

// observer counts and logs the outcomes of one sink's requests:
// meshmetrics_sink_requests_total{sink,result},
// meshmetrics_sink_request_duration_seconds{sink} and
// meshmetrics_instances_dropped_total{sink,reason}.
type observer struct {
	sink string
	t    Telemetry
}

// newObserver makes the drop counters of sink exist at 0 for every reason
// the Sender may count.
func newObserver(sink string, t Telemetry, spooled bool) *observer {
	o := &observer{sink: sink, t: t}
	if t.Metrics != nil {
		t.Metrics.InitDropped(sink, telemetry.PushDropReasons(spooled)...)
	}
	return o
}

func (o *observer) result(result string) {
	if o.t.Metrics != nil {
		o.t.Metrics.SinkSends.WithLabelValues(o.sink, result).Inc()
	}
}

func (o *observer) retried() { o.result(telemetry.SendRetry) }

// ended observes one request's attempts, retries included.
func (o *observer) ended(took time.Duration, err error) {
	if o.t.Metrics != nil {
		o.t.Metrics.SinkSendLatency.WithLabelValues(o.sink).Observe(took.Seconds())
	}
	switch {
	case err == nil:
		o.result(telemetry.SendOK)
	case IsPartial(err):
		// The sink logs what its backend reported: only it can read it.
		o.result(telemetry.SendPartial)
	case IsPermanent(err):
		o.result(telemetry.SendRejected)
	default:
		o.result(telemetry.SendFailed)
	}
}

// dropped counts instances lost for reason and logs the cause.
func (o *observer) dropped(reason string, _, instances int, err error) {
	if o.t.Metrics != nil {
		o.t.Metrics.Dropped(o.sink, reason, instances)
	}
	msg := fmt.Sprintf("%d instances dropped (%s)", instances, reason)
	if err != nil {
		msg += ": " + err.Error()
	}
	o.log(logrus.WarnLevel, "drop|"+reason, msg)
}

func (o *observer) log(level logrus.Level, key, msg string) {
	if o.t.Secrets != nil {
		msg = o.t.Secrets.RedactString(msg)
	}
	fields := logrus.Fields{"sink": o.sink}
	switch {
	case o.t.Limiter != nil:
		o.t.Limiter.Log(level, o.sink+"|"+key, fields, msg)
	case o.t.Log != nil:
		o.t.Log.WithFields(fields).Log(level, msg)
	}
}

// observed is the telemetry layer around the retry layer: it sees each
// request's outcome once, after its retries.
type observed[R Request] struct {
	next sender[R]
	obs  *observer
}

func (o observed[R]) send(ctx context.Context, r R) error {
	start := time.Now()
	err := o.next.send(ctx, r)
	o.obs.ended(time.Since(start), err)
	return err
}
