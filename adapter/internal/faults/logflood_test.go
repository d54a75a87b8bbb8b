package faults_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// TestCallersCannotFloodTheLog is the fifth attack: 20 calls made
// 105 MB of log in half a second, each refused config logged whole with
// its 8 MB dedup_id, rate-limited by the config's digest, which the caller
// chooses. Every way a call can be refused is driven here, 20 times each,
// with a new config, a new 8 MB dedup_id and megabyte names every time:
// each refusal is counted, the caller's values are cut in the lines and in
// the statuses, and lines are rate-limited by reason: the whole log stays
// under 64 KiB.
func TestCallersCannotFloodTheLog(t *testing.T) {
	const (
		calls = 20
		huge  = 1 << 20
	)
	h := start(t, setup{kind: rwKind})
	client := metricpb.NewHandleMetricServiceClient(h.conn)
	dedup := func(i int) string { return fmt.Sprint(i) + strings.Repeat("i", 8<<20) }
	refusals := []struct {
		name   string
		req    func(i int) *metricpb.HandleMetricRequest
		code   codes.Code
		reason string
	}{
		{"a refused config, new each time", func(i int) *metricpb.HandleMetricRequest {
			return &metricpb.HandleMetricRequest{DedupId: dedup(i), Instances: instances(1, 1, 0), AdapterConfig: h.params(func(p *config.Params) {
				p.Metrics = []*config.Params_MetricInfo{{InstanceName: instanceName, Kind: config.Params_MetricInfo_COUNTER,
					Name: "requests", LabelNames: []string{fmt.Sprint(i) + strings.Repeat("l", huge), fmt.Sprint(i) + strings.Repeat("l", huge)}}}
			})}
		}, codes.InvalidArgument, telemetry.ReasonBadConfig},
		{"an unknown instance with a huge name", func(i int) *metricpb.HandleMetricRequest {
			return &metricpb.HandleMetricRequest{DedupId: dedup(i), AdapterConfig: h.params(),
				Instances: []*metricpb.InstanceMsg{{Name: fmt.Sprint(i) + strings.Repeat("n", huge), Value: mt.Int(1)}}}
		}, codes.InvalidArgument, telemetry.ReasonUnknownInstance},
		{"a value that is not a number, huge", func(i int) *metricpb.HandleMetricRequest {
			return &metricpb.HandleMetricRequest{DedupId: dedup(i), AdapterConfig: h.params(),
				Instances: []*metricpb.InstanceMsg{{Name: instanceName, Value: mt.Str(strings.Repeat("v", huge))}}}
		}, codes.InvalidArgument, telemetry.ReasonNotNumeric},
	}
	for _, r := range refusals {
		for i := range calls {
			_, err := client.HandleMetric(context.Background(), r.req(i))
			require.Equal(t, r.code, status.Code(err), r.name)
			require.Less(t, len(status.Convert(err).Message()), 4<<10, "%s: the status is cut too", r.name)
		}
	}
	rejected := h.counters("meshmetrics_instances_rejected_total", "reason")
	for _, r := range refusals {
		require.Equal(t, float64(calls), rejected[r.reason], "%s: every refusal counted", r.name)
	}
	logs := h.logs.String()
	lines := strings.Count(logs, "\n")
	t.Logf("figures %s: %d refused calls carrying %d MiB of ids and names: %d log lines, %d bytes", t.Name(),
		calls*len(refusals), calls*len(refusals)*(8+1), lines, len(logs))
	require.Less(t, len(logs), 64<<10, "the log stays small")
	require.Contains(t, logs, "bytes)", "values are cut, saying how long they were")
}
