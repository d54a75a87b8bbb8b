package faults_test

import (
	"math"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
)

// TestBadValuesAreRefusedAndTheRestDelivered mixes one bad instance into
// calls of good ones: the call fails with InvalidArgument naming the
// problem, the bad instance is counted by reason, and the good ones reach
// the backend.
func TestBadValuesAreRefusedAndTheRestDelivered(t *testing.T) {
	tests := []struct {
		name   string
		bad    *metricpb.InstanceMsg
		reason string
		msg    string
	}{
		{"NaN", &metricpb.InstanceMsg{Name: instanceName, Value: mt.Double(math.NaN())}, telemetry.ReasonNonFinite, "NaN or infinite"},
		{"+Inf", &metricpb.InstanceMsg{Name: instanceName, Value: mt.Double(math.Inf(1))}, telemetry.ReasonNonFinite, "NaN or infinite"},
		{"-Inf", &metricpb.InstanceMsg{Name: instanceName, Value: mt.Double(math.Inf(-1))}, telemetry.ReasonNonFinite, "NaN or infinite"},
		{"negative counter increment", &metricpb.InstanceMsg{Name: instanceName, Value: mt.Int(-3)}, telemetry.ReasonNegativeCounter, "negative increment of a COUNTER"},
		{"no value", &metricpb.InstanceMsg{Name: instanceName}, telemetry.ReasonMissingValue, "no value"},
		{"not a number", &metricpb.InstanceMsg{Name: instanceName, Value: mt.Str("seven")}, telemetry.ReasonNotNumeric, "not a number"},
		{"unknown instance", &metricpb.InstanceMsg{Name: "nosuch.instance.default", Value: mt.Int(1)}, telemetry.ReasonUnknownInstance, `"nosuch.instance.default"`},
	}
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			h := start(t, setup{kind: k})
			cfg := h.params()
			for _, tc := range tests {
				ins := append(instances(4, 2, 0), tc.bad)
				err := h.call(cfg, ins)
				require.Equal(t, codes.InvalidArgument, status.Code(err), tc.name)
				require.Contains(t, status.Convert(err).Message(), tc.msg, tc.name)
				require.Contains(t, status.Convert(err).Message(), "1 of 5 instances refused", tc.name)
			}
			require.NoError(t, h.flush(30*time.Second))
			rejected := h.counters("meshmetrics_instances_rejected_total", "reason")
			want := map[string]float64{}
			for _, tc := range tests {
				want[tc.reason]++
			}
			require.Equal(t, want, rejected)
			accepted := h.counters("meshmetrics_instances_accepted_total", "")[""]
			require.Equal(t, float64(4*len(tests)), accepted, "the good instances of every call")
			require.Equal(t, accepted, h.received())
			require.Empty(t, h.drops())
		})
	}
}
