package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest"
)

// metricsURL is the --metrics-url of an in-process adapter.
func metricsURL(a *mixertest.Adapter) string { return "http://" + a.HTTPAddr() + "/metrics" }

// TestLoadPrintsTheAdaptersDropsAndFailsOnThem: the calls of a load all
// succeed, but the adapter drops the instances of series beyond its cap
// after answering: load says so, from the adapter's own counters, and
// exits 1 unless --allow-drops.
func TestLoadPrintsTheAdaptersDropsAndFailsOnThem(t *testing.T) {
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{BuiltinSinks: true, Tweak: func(o *adapter.Options) { o.MaxSeries = 5 }})
	load := []string{"load", "--address", a.GRPCAddr(), "--metrics-url", metricsURL(a), "-c", "1", "-n", "4", "--instances", "5", "--series", "20"}

	r := mockmixer(t, load...)
	require.Equal(t, exitFailed, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "errors        none", "every call succeeded")
	require.Contains(t, r.stdout, "adapter       15 instances dropped [sink_series_limit (prometheus) 15], 0 instances rejected by the adapter ("+metricsURL(a)+")\n")

	r = mockmixer(t, append(load, "--allow-drops")...)
	require.Equal(t, exitOK, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "adapter       15 instances dropped [sink_series_limit (prometheus) 15]", "counted over this run only")

	// Series the adapter holds already: nothing dropped.
	r = mockmixer(t, "load", "--address", a.GRPCAddr(), "--metrics-url", metricsURL(a), "-c", "1", "-n", "1", "--instances", "5", "--series", "5", "--output", "json")
	require.Equal(t, exitOK, r.code, r.stdout+r.stderr)
	var out struct {
		Requests int64         `json:"requests"`
		Adapter  *adapterDrops `json:"adapter"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	require.Equal(t, int64(1), out.Requests)
	require.NotNil(t, out.Adapter)
	require.Equal(t, metricsURL(a), out.Adapter.MetricsURL)
	require.Empty(t, out.Adapter.Dropped)
	require.Empty(t, out.Adapter.Error)

	// A --metrics-url that cannot be read fails the run; none reads nothing.
	r = mockmixer(t, "load", "--address", a.GRPCAddr(), "--metrics-url", "http://127.0.0.1:1/metrics", "-n", "1", "--instances", "1", "--series", "1")
	require.Equal(t, exitFailed, r.code)
	require.Contains(t, r.stdout, "adapter       cannot read the adapter's drops: ")
	r = mockmixer(t, "load", "--address", a.GRPCAddr(), "--metrics-url", "none", "-n", "1", "--instances", "1", "--series", "1")
	require.Equal(t, exitOK, r.code, r.stdout+r.stderr)
	require.NotContains(t, r.stdout, "adapter ")
}

// TestReportPrintsTheAdaptersDropsAndQuietSaysWhatFailed: report prints
// the adapter's drops too, and -q keeps every failure reason (once, with a
// count) besides the summary.
func TestReportPrintsTheAdaptersDropsAndQuietSaysWhatFailed(t *testing.T) {
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{BuiltinSinks: true, Tweak: func(o *adapter.Options) { o.MaxSeries = 1 }})
	args := append(append([]string{"report"}, sampleFlags()...), "--address", a.GRPCAddr(), "--metrics-url", metricsURL(a),
		"--attributes-file", root("testdata", "attributes", "analytic.yaml"), "-q")
	r := mockmixer(t, args...)
	require.Equal(t, exitFailed, r.code, r.stdout+r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 2, r.stdout)
	require.Equal(t, "summary: 10 reports, 10 bags, 6 matched a rule, 6 calls (0 failed), 6 instances sent, 0 instance errors", lines[0])
	dropped := mixertest.SeriesOf(a.Scrape(t)["meshmetrics_instances_dropped_total"])[`{reason="sink_series_limit",sink="prometheus"}`]
	require.Greater(t, dropped, 1.0, "the instances of every series but the first")
	require.Equal(t, fmt.Sprintf("adapter: %.0f instances dropped [sink_series_limit (prometheus) %.0f], 0 instances rejected by the adapter (%s)",
		dropped, dropped, metricsURL(a)), lines[1])

	// A handler config the adapter refuses: -q still says why, once.
	bad := write(t, "handler.yaml", `apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: analyticprom-prometheus, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "meshmetrics.istio-system.svc.cluster.local:50000"}
  params:
    metrics:
    - {name: analytic_requests, instance_name: analyticcounter.instance.istio-system, kind: DISTRIBUTION, label_names: [le]}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: analyticprom, namespace: istio-system}
spec:
  match: match(request.path, "/v1/damage?analytic=*")
  actions: [{handler: analyticprom-prometheus, instances: [analyticcounter]}]
`)
	r = mockmixer(t, "report", "-f", root("deploy", "kubernetes", "adapter.yaml"), "-f", root("deploy", "kubernetes", "template-metric.yaml"),
		"-f", root("deploy", "kubernetes", "samples", "analyticcounter.yaml"), "-f", bad, "--address", a.GRPCAddr(), "--metrics-url", metricsURL(a),
		"-s", "request.path=/v1/damage?analytic=1", "-r", "3", "-q")
	require.Equal(t, exitFailed, r.code, r.stdout+r.stderr)
	lines = strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 3, r.stdout)
	require.Regexp(t, `^HandleMetric -> handler analyticprom-prometheus.handler.istio-system at `+a.GRPCAddr()+
		` failed: InvalidArgument: .*a DISTRIBUTION cannot have a label named "le".* \(3 times\)$`, lines[0])
	require.Equal(t, "summary: 3 reports, 3 bags, 3 matched a rule, 3 calls (3 failed), 3 instances sent, 0 instance errors", lines[1])
	require.Regexp(t, `^adapter: 0 instances dropped, 3 instances rejected \[bad_config 3\] by the adapter`, lines[2])
}
