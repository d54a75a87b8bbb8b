package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest"
)

// The adapter's metrics port when --metrics-url is not given: meshmetrics'
// default --http-address, Istio's Prometheus adapter port.
const defaultMetricsPort = "42422"

// dropFlags are the flags of report, load, accesslog and accesslog-load that
// check the adapter's own drop counters over a run.
type dropFlags struct {
	metricsURL string
	allowDrops bool
}

func (d *dropFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.metricsURL, "metrics-url", "", "the adapter's /metrics, read before and after the run to print what the adapter dropped or rejected "+
		"(default http://<host of the adapter address>:"+defaultMetricsPort+"/metrics; none: do not read it)")
	fs.BoolVar(&d.allowDrops, "allow-drops", false, "exit 0 even when the adapter dropped instances during the run (by default a drop is a failure)")
}

// dropWatch reads meshmetrics_instances_dropped_total and
// meshmetrics_instances_rejected_total before and after a run. The
// adapter counts a series-cap drop when its sink consumes the instance,
// after HandleMetric has answered, so the end of a run waits for the sink
// queues to empty and the counters to settle.
type dropWatch struct {
	url string
	// explicit: the URL was given; failing to read it is a failure.
	explicit bool
	// accessLog: the run streams access logs, so the access-log path's
	// skips are read too.
	accessLog bool
	before    adapterCounts
	err       error
}

// adapterCounts are the adapter's counters: dropped by "reason (sink)",
// rejected by reason, skipped on the access-log path by reason, and the
// instances waiting in its sink queues.
type adapterCounts struct {
	dropped, rejected, skipped map[string]float64
	queued                     float64
}

// isAccessLogLoss says whether a reason of meshmetrics_accesslog_skipped_total
// loses what Envoy sent (docs/mixerless.md). The others are Mixer's own
// outcomes (a match that fails to evaluate is no match, an instance whose
// attributes are missing is not built), the handler's refusals (rejected,
// as for HandleMetric), or queue_full, which meshmetrics_instances_dropped_total
// counts too.
func isAccessLogLoss(reason string) bool {
	switch reason {
	case "malformed_message", "too_many_entries", "malformed_entry", "forward_queue_full", "bad_handler_config":
		return true
	}
	return false
}

// startDropWatch reads the counters before a run; addresses are the
// adapter addresses the run calls (the default URL needs them to name one
// host), accessLog says the run streams access logs. It returns nil when
// told not to read (none).
func startDropWatch(ctx context.Context, f dropFlags, addresses []string, accessLog bool) *dropWatch {
	w := &dropWatch{url: f.metricsURL, explicit: f.metricsURL != "", accessLog: accessLog}
	switch f.metricsURL {
	case "none":
		return nil
	case "":
		hosts := map[string]bool{}
		for _, a := range addresses {
			if h, _, err := net.SplitHostPort(a); err == nil {
				hosts[h] = true
			}
		}
		if len(hosts) != 1 {
			w.err = fmt.Errorf("the run calls %d adapter hosts; name the adapter's /metrics with --metrics-url", len(hosts))
			return w
		}
		for h := range hosts {
			w.url = "http://" + net.JoinHostPort(h, defaultMetricsPort) + "/metrics"
		}
	}
	w.before, w.err = readCounts(ctx, w.url)
	return w
}

func readCounts(ctx context.Context, url string) (adapterCounts, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	families, err := mixertest.ScrapeURLPrefix(ctx, url, "meshmetrics_")
	if err != nil {
		return adapterCounts{}, err
	}
	c := adapterCounts{dropped: map[string]float64{}, rejected: map[string]float64{}, skipped: map[string]float64{}}
	if families["meshmetrics_instances_received_total"] == nil {
		return c, fmt.Errorf("%s is not a meshmetrics /metrics (no meshmetrics_instances_received_total)", url)
	}
	for _, m := range families["meshmetrics_instances_dropped_total"].GetMetric() {
		c.dropped[label(m, "reason")+" ("+label(m, "sink")+")"] += m.GetCounter().GetValue()
	}
	for _, m := range families["meshmetrics_instances_rejected_total"].GetMetric() {
		c.rejected[label(m, "reason")] += m.GetCounter().GetValue()
	}
	for _, m := range families["meshmetrics_accesslog_skipped_total"].GetMetric() {
		c.skipped[label(m, "reason")] += m.GetCounter().GetValue()
	}
	for _, m := range families["meshmetrics_queue_depth"].GetMetric() {
		c.queued += m.GetGauge().GetValue()
	}
	return c, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// adapterDrops is what the adapter dropped and rejected during a run.
type adapterDrops struct {
	MetricsURL string             `json:"metrics_url"`
	Dropped    map[string]float64 `json:"dropped"`
	Rejected   map[string]float64 `json:"rejected"`
	// Skipped is the access-log path's meshmetrics_accesslog_skipped_total
	// by reason (messages, entries, rule evaluations or instances), for the
	// access-log commands.
	Skipped map[string]float64 `json:"skipped,omitempty"`
	// Error says why the counters could not be read; then nothing is known.
	Error string `json:"error,omitempty"`
	// explicit: --metrics-url was given, so an Error is a failure.
	explicit bool
	// accessLog: the run streamed access logs; Skipped counts.
	accessLog bool
}

// finish waits for the adapter's sink queues to empty and its drop
// counters to stay the same for a moment (at most settle), and returns the
// changes since the start.
func (w *dropWatch) finish(ctx context.Context, settle time.Duration) *adapterDrops {
	if w == nil {
		return nil
	}
	out := &adapterDrops{MetricsURL: w.url, explicit: w.explicit, accessLog: w.accessLog}
	if w.err != nil {
		out.Error = w.err.Error()
		return out
	}
	deadline := time.Now().Add(settle)
	var last adapterCounts
	for {
		now, err := readCounts(ctx, w.url)
		if err != nil {
			out.Error = err.Error()
			return out
		}
		stable := last.dropped != nil && now.queued == 0 && sameCounts(now.dropped, last.dropped) && sameCounts(now.rejected, last.rejected) &&
			sameCounts(now.skipped, last.skipped)
		last = now
		if stable || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	out.Dropped, out.Rejected = delta(last.dropped, w.before.dropped), delta(last.rejected, w.before.rejected)
	if w.accessLog {
		out.accessLog, out.Skipped = true, delta(last.skipped, w.before.skipped)
	}
	return out
}

func sameCounts(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func delta(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

func total(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}

// failed reports whether the run must fail for what the adapter did: it
// dropped instances or lost access-log input (unless allowed), or the
// counters named with --metrics-url could not be read.
func (d *adapterDrops) failed(allowDrops bool) bool {
	if d == nil {
		return false
	}
	if d.Error != "" {
		return d.explicit
	}
	return (total(d.Dropped) > 0 || d.lost() > 0) && !allowDrops
}

// lost is what the access-log path skipped for a reason that loses input.
func (d *adapterDrops) lost() float64 {
	var n float64
	for r, c := range d.Skipped {
		if isAccessLogLoss(r) {
			n += c
		}
	}
	return n
}

// String is one line for the text summaries.
func (d *adapterDrops) String() string {
	if d.Error != "" {
		if d.explicit {
			return fmt.Sprintf("cannot read the adapter's drops: %s", d.Error)
		}
		return fmt.Sprintf("the adapter's drops are unknown: %s (--metrics-url names its /metrics; --metrics-url none stops looking)", d.Error)
	}
	skipped := ""
	if total(d.Skipped) > 0 {
		skipped = fmt.Sprintf("; access-log path: %.0f skipped%s", total(d.Skipped), detail(d.Skipped))
		if d.lost() == 0 {
			skipped += ", none lost"
		}
	}
	if total(d.Dropped) == 0 && total(d.Rejected) == 0 {
		return "no instance dropped or rejected by the adapter" + skipped + " (" + d.MetricsURL + ")"
	}
	return fmt.Sprintf("%s dropped%s, %s rejected%s by the adapter%s (%s)",
		count(total(d.Dropped)), detail(d.Dropped), count(total(d.Rejected)), detail(d.Rejected), skipped, d.MetricsURL)
}

func count(v float64) string {
	if v == 1 {
		return "1 instance"
	}
	return fmt.Sprintf("%.0f instances", v)
}

func detail(m map[string]float64) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.0f", k, m[k])
	}
	return " [" + strings.Join(parts, ", ") + "]"
}
