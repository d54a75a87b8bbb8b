package adapter_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/golden"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/modelpb"
)

// TestDefaultSinksServeMixerInstancesOnMetrics runs the adapter as `make run`
// does (built-in sinks), sends Mixer's golden bytes and scrapes /metrics.
func TestDefaultSinksServeMixerInstancesOnMetrics(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	a, err := adapter.New(adapter.Options{GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "r", Log: log, DebugConfig: true})
	require.NoError(t, err)
	require.NoError(t, a.Start())
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, a.Shutdown(ctx))
	}()
	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{})))
	require.NoError(t, err)
	defer conn.Close()
	raw, err := golden.ReadHex("handlemetric-analyticcounter.hex")
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		in := rawMessage(raw)
		// The golden request carries dedup_id 42 each time: a real Mixer
		// reuses ids under load and never retries, so every call counts.
		require.NoError(t, conn.Invoke(context.Background(), "/metric.HandleMetricService/HandleMetric", &in, &modelpb.ReportResult{}))
	}
	require.NoError(t, a.Flush(context.Background()))

	resp, err := http.Get("http://" + a.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Contains(t, string(body), "# TYPE istio_damage_requests counter")
	require.Contains(t, string(body), `istio_damage_requests{path="/v1/damage"} 3`+"\n")
	require.Contains(t, string(body), "meshmetrics_dedup_ids_reused_total 2\n")
	require.NotRegexp(t, `reason="duplicate_request"} [1-9]`, string(body), "nothing is dropped as a duplicate by default")

	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/debug/config": 200} {
		r, err := http.Get("http://" + a.HTTPAddr() + path)
		require.NoError(t, err)
		r.Body.Close()
		require.Equal(t, want, r.StatusCode, path)
	}
}
