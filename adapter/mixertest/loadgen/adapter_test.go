package loadgen_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/loadgen"
)

// These tests run against meshmetrics in-process (mixertest), which uses
// this package: they live in the external test package.

func TestRunAgainstTheAdapter(t *testing.T) {
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{})
	s, err := loadgen.Run(context.Background(), loadgen.Config{Address: a.GRPCAddr(), Workers: 4, Conns: 2, Requests: 50,
		InstancesPerRequest: 10, Series: 20, Dimensions: 6, Ring: 3})
	require.NoError(t, err)
	require.Equal(t, int64(50), s.Requests)
	require.Equal(t, int64(500), s.Instances)
	require.Zero(t, s.Errors)
	require.Empty(t, s.ErrorsByCode)
	require.Positive(t, s.Latency.Max)
	require.LessOrEqual(t, s.Latency.P50, s.Latency.P99)
	require.LessOrEqual(t, s.Latency.P99, s.Latency.Max)
	require.Equal(t, 3, s.Settings.Ring, "20 series over 10 instances a request need 2 requests; 3 asked")

	sink := a.Recorded(t)
	require.NoError(t, sink.WaitSamples(t.Context(), 500))
	series := sink.Series()
	require.Len(t, series, 20)
	total := 0
	for _, agg := range series {
		total += agg.Count
	}
	require.Equal(t, 500, total)
}

// TestMixersDedupRaceIsCountedExactly reproduces a busy Mixer 1.7, whose concurrent calls
// share dedup_ids, against the adapter with its default flags: every instance counts, and
// the adapter sees exactly the reused ids the load generator sent.
func TestMixersDedupRaceIsCountedExactly(t *testing.T) {
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{})
	s, err := loadgen.Run(context.Background(), loadgen.Config{Address: a.GRPCAddr(), Workers: 16, Conns: 4, Requests: 3000,
		InstancesPerRequest: 5, Series: 10, Dimensions: 2, RacyDedup: true})
	require.NoError(t, err)
	require.Zero(t, s.Errors)
	t.Logf("%d of %d calls reused a dedup_id", s.ReusedDedupIDs, s.Requests)
	require.Positive(t, s.ReusedDedupIDs, "16 workers racing on 2 cores share ids")

	sink := a.Recorded(t)
	require.NoError(t, sink.WaitSamples(t.Context(), int(s.Instances)))
	total := 0
	for _, agg := range sink.Series() {
		total += agg.Count
	}
	require.Equal(t, int(s.Instances), total, "every instance of every call counts")
	reused := a.Series(t, "meshmetrics_dedup_ids_reused_total")["{}"]
	require.Equal(t, float64(s.ReusedDedupIDs), reused, "the adapter sees the reuses the generator made")
}
