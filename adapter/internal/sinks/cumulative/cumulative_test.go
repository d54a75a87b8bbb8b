package cumulative_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/cumulative"
)

func TestRecord(t *testing.T) {
	tests := []struct {
		name   string
		m      sinks.Metric
		values []float64
		sum    float64
		count  uint64
		cum    []uint64
	}{
		{"counter adds", sinks.Metric{Kind: sinks.Counter}, []float64{1, 2.5}, 3.5, 0, nil},
		{"gauge sets", sinks.Metric{Kind: sinks.Gauge}, []float64{7, 3}, 3, 0, nil},
		{"histogram observes, bounds inclusive", sinks.Metric{Kind: sinks.Distribution, Buckets: []float64{1, 2}},
			[]float64{0.5, 1, 1.5, 2, 3}, 8, 5, []uint64{2, 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := cumulative.NewValue(&tc.m)
			for _, x := range tc.values {
				v.Record(tc.m.Kind, tc.m.Buckets, x)
			}
			require.Equal(t, tc.sum, v.Sum)
			require.Equal(t, tc.count, v.Count)
			require.Equal(t, tc.cum, v.AppendCumulative(nil))
		})
	}
}
