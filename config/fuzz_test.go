package config_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/config"
)

// FuzzDecodeParams feeds arbitrary adapter_config bytes through Decode and
// Normalize: they may refuse them, with ErrInvalid, but never panic, and
// what they accept must survive a second Normalize unchanged.
// fuzz budget: 200000x
func FuzzDecodeParams(f *testing.F) {
	seeds := []*config.Params{
		{Metrics: []*config.Params_MetricInfo{{InstanceName: "a", Kind: config.Params_MetricInfo_COUNTER, LabelNames: []string{"x"}}}},
		{Metrics: []*config.Params_MetricInfo{{InstanceName: "d", Kind: config.Params_MetricInfo_DISTRIBUTION, Buckets: &config.Params_MetricInfo_BucketsDefinition{
			Definition: &config.Params_MetricInfo_BucketsDefinition_ExponentialBuckets{ExponentialBuckets: &config.Params_MetricInfo_BucketsDefinition_Exponential{
				NumFiniteBuckets: 8, Scale: 1, GrowthFactor: 10}}}}}},
		{Librato: &config.LibratoParams{TokenEnv: "T"}, Prometheus: &config.PrometheusParams{RemoteWrite: &config.RemoteWrite{Url: "http://x/api/v1/write"}}},
		{LibratoEmail: "e@x", LibratoToken: "tok"},
	}
	for _, p := range seeds {
		b, err := p.Marshal()
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		p, err := config.Decode(true, []byte(config.TypeURL), value)
		if err != nil {
			require.True(t, errors.Is(err, config.ErrInvalid))
			return
		}
		n, err := config.Normalize(p)
		if err != nil {
			require.True(t, errors.Is(err, config.ErrInvalid))
			return
		}
		again, err := config.Normalize(n)
		require.NoError(t, err)
		require.True(t, n.Equal(again))
		_ = config.Redacted(n).String()
	})
}
