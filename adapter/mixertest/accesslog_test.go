package mixertest

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
)

// analyticSamples is a config directory of the seed's analyticprom samples:
// the instance, and the Prometheus handler with its rule.
func analyticSamples(t *testing.T) string {
	dir := filepath.Join(RepoRoot(), "deploy", "kubernetes", "samples")
	return ConfigDir(t, []string{filepath.Join(dir, "analyticcounter.yaml"), filepath.Join(dir, "analyticprom-prometheus.yaml")})
}

// TestAccessLogSamplesEndToEnd streams the sample entries, on v3 then on
// v2, into an adapter running the samples as its config directory, and
// checks the recording sink: the series the Mixer path gives for the same
// requests (TestSamplesEndToEnd), from access logs.
func TestAccessLogSamplesEndToEnd(t *testing.T) {
	a := StartAdapter(t, AdapterOptions{ConfigDir: analyticSamples(t)})
	file := filepath.Join(RepoRoot(), "testdata", "accesslog", "analytic.yaml")
	entries := NewEnvoy(t, EnvoyOptions{Address: a.GRPCAddr()}).SendFile(t, file)
	require.Len(t, entries, 11)
	metric := "istio_analytic_requests"
	want := map[string]sinktest.Aggregate{
		sinktest.Key(metric, "/v1/damage?analytic=1", "GET", "200", "damage", "frontend"): {Count: 2, Sum: 2, Min: 1, Max: 1, Last: 1},
		sinktest.Key(metric, "/v1/damage?analytic=2", "POST", "201", "damage", "batch"):   {Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1},
		sinktest.Key(metric, "/v1/damage?analytic=1", "GET", "500", "damage", "frontend"): {Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1},
		sinktest.Key(metric, "/v1/damage?analytic=", "GET", "200", "damage", "frontend"):  {Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1},
		sinktest.Key(metric, "/v1/damage?analytic=3", "GET", "200", "damage", "unknown"):  {Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1},
	}
	require.Equal(t, want, a.Recorded(t).Series())

	NewEnvoy(t, EnvoyOptions{Address: a.GRPCAddr(), V2: true, EntriesPerMessage: 3}).SendFile(t, file)
	for k, v := range want {
		want[k] = sinktest.Aggregate{Count: 2 * v.Count, Sum: 2 * v.Sum, Min: 1, Max: 1, Last: 1}
	}
	require.Equal(t, want, a.Recorded(t).Series(), "v2 streams count the same")

	text := a.Series(t, "meshmetrics_accesslog_entries_received_total")
	require.Equal(t, map[string]float64{
		`{api="v2",protocol="http"}`: 10, `{api="v2",protocol="tcp"}`: 1, `{api="v3",protocol="http"}`: 10, `{api="v3",protocol="tcp"}`: 1,
	}, text)
}

// TestAccessLogRulesFromSources: the config directory from in-memory
// sources, and an edit of it taking effect.
func TestAccessLogConfigDirFromSources(t *testing.T) {
	dir := ConfigDir(t, nil, crd.Source{Name: "rules", Data: []byte(`apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: h, namespace: istio-system}
spec:
  adapter: meshmetrics
  params:
    metrics: [{name: tcp_sent, instance_name: sent.instance.istio-system, kind: COUNTER, label_names: [cluster]}]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: sent, namespace: istio-system}
spec:
  template: metric
  params: {value: connection.sent.bytes, dimensions: {cluster: upstream.cluster | "none"}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: r, namespace: istio-system}
spec:
  match: context.protocol == "tcp"
  actions: [{handler: h, instances: [sent]}]
`)})
	a := StartAdapter(t, AdapterOptions{ConfigDir: dir})
	e := NewEnvoy(t, EnvoyOptions{Address: a.GRPCAddr()})
	entries := Entries(t, `
- {protocol: tcp, sent_bytes: 100, upstream_cluster: "outbound|3306||mysql.db.svc.cluster.local"}
- {protocol: tcp, sent_bytes: 50, upstream_cluster: "outbound|3306||mysql.db.svc.cluster.local"}
- {path: /not-tcp}
`)
	e.RequireSend(t, entries...)
	require.Equal(t, map[string]sinktest.Aggregate{
		sinktest.Key("istio_tcp_sent", "outbound|3306||mysql.db.svc.cluster.local"): {Count: 2, Sum: 150, Min: 50, Max: 100, Last: 50},
	}, a.Recorded(t).Series())

	// No adapter there: the stream fails and Send says so.
	require.Error(t, NewEnvoy(t, EnvoyOptions{Address: "127.0.0.1:1"}).Send(entries...))
}
