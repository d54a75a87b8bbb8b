package mixertest_test

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/sinktest"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
)

// TestExampleUserConfigFromAccessLogs tests the same instance, handler and
// rule as TestExampleUserConfig, the Mixer-less way: meshmetrics runs them
// from its config directory, and the requests arrive as Envoy's access-log
// entries. A real test would name its files in ConfigDir's paths and could
// keep its entries in a file (Envoy.SendFile, the format of `mockmixer
// accesslog`).
func TestExampleUserConfigFromAccessLogs(t *testing.T) {
	dir := mixertest.ConfigDir(t, nil, crd.Source{Name: "my-config.yaml", Data: []byte(myConfig)})
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{ConfigDir: dir})
	envoy := mixertest.NewEnvoy(t, mixertest.EnvoyOptions{Address: a.GRPCAddr()})

	// Entries written in the entries format: what the checkout service's
	// sidecar logs. destination.service.name comes from upstream_cluster,
	// response.duration from duration.
	envoy.RequireSend(t, mixertest.Entries(t, `
defaults: {upstream_cluster: "inbound|8080|http|checkout.shop.svc.cluster.local"}
entries:
- {method: POST, path: /api/pay, code: 200, duration: 42ms}
- {method: POST, path: /api/pay, code: 200, duration: 8ms}
- {method: GET, path: /healthz, duration: 1ms}   # not /api/: no match
`)...)
	// Or built with go-control-plane's types, as Envoy's own code does.
	envoy.SendHTTP(t, &alsdata.HTTPAccessLogEntry{
		CommonProperties: &alsdata.AccessLogCommon{
			StartTime:                  timestamppb.Now(),
			TimeToLastDownstreamTxByte: durationpb.New(100 * time.Millisecond),
			UpstreamCluster:            "inbound|8080|http|checkout.shop.svc.cluster.local",
		},
		Request:  &alsdata.HTTPRequestProperties{RequestMethod: corev3.RequestMethod_PUT, Path: "/api/cart"},
		Response: &alsdata.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(201)},
	})

	require.Equal(t, map[string]sinktest.Aggregate{
		sinktest.Key("istio_checkout_latency_ms", "POST", "200"): {Count: 2, Sum: 50, Min: 8, Max: 42, Last: 8},
		sinktest.Key("istio_checkout_latency_ms", "PUT", "201"):  {Count: 1, Sum: 100, Min: 100, Max: 100, Last: 100},
	}, a.Recorded(t).Series())
}
