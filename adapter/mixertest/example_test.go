package mixertest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
)

// myConfig is what a user would keep next to their service: an instance, a handler for
// meshmetrics and a rule. Here it is in memory; a real test would name the files in
// MixerOptions.Config.
const myConfig = `
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: checkoutlatency, namespace: istio-system}
spec:
  template: metric
  params:
    value: response.duration | "0ms"
    dimensions:
      method: request.method | "unknown"
      code: response.code | 200
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: checkout, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "meshmetrics.istio-system.svc.cluster.local:50000"}
  params:
    metrics:
    - name: checkout_latency_ms
      instance_name: checkoutlatency.instance.istio-system
      kind: DISTRIBUTION
      duration_unit: MILLISECONDS
      label_names: [method, code]
      buckets: {explicit_buckets: {bounds: [10, 100, 1000]}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: checkout, namespace: istio-system}
spec:
  match: destination.service.name == "checkout" && request.path.startsWith("/api/")
  actions:
  - handler: checkout
    instances: [checkoutlatency]
`

// TestExampleUserConfig shows how to test your own handler, instance and rule: start
// meshmetrics in the test, point your config at it, send the requests you care about and
// check what the metric received.
func TestExampleUserConfig(t *testing.T) {
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{})
	m := mixertest.NewMixer(t, mixertest.MixerOptions{
		Config:  mixertest.MeshmetricsCRs(), // the adapter and metric template CRs
		Sources: []crd.Source{{Name: "my-config.yaml", Data: []byte(myConfig)}},
		Address: a.GRPCAddr(), // instead of the cluster address in the handler
	})

	m.Report(
		m.Bag(t, map[string]any{"destination.service.name": "checkout", "request.path": "/api/pay",
			"request.method": "POST", "response.code": 200, "response.duration": durationMs(42)}),
		m.Bag(t, map[string]any{"destination.service.name": "checkout", "request.path": "/api/pay",
			"request.method": "POST", "response.code": 200, "response.duration": durationMs(8)}),
		m.Bag(t, map[string]any{"destination.service.name": "checkout", "request.path": "/healthz",
			"request.method": "GET", "response.duration": durationMs(1)}), // not /api/: no match
	).RequireOK(t)

	require.Equal(t, map[string]sinktest.Aggregate{
		sinktest.Key("istio_checkout_latency_ms", "POST", "200"): {Count: 2, Sum: 50, Min: 8, Max: 42, Last: 8},
	}, a.Recorded(t).Series())
}

func durationMs(ms int) any { return time.Duration(ms) * time.Millisecond }
