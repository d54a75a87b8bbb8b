package adapter

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/config"
)

// resolve is what a handler build does with params: config's generic
// normalization, then the built-in backends' own (sinks.Resolve).
func resolve(t *testing.T, in *config.Params) (*config.Params, []string, error) {
	t.Helper()
	factories := builtinFactories(sinks.Env{Secrets: &logging.Secrets{}, Replica: "r"}, nil)
	p, err := config.Normalize(in)
	if err != nil {
		return nil, nil, err
	}
	uses, err := sinks.Resolve(p, factories)
	var keys []string
	for _, u := range uses {
		keys = append(keys, u.Key[:min(len(u.Key), len("remote_write"))])
	}
	return p, keys, err
}

func TestBackendsNormalizeTheirBlocks(t *testing.T) {
	in := &config.Params{
		Metrics:    []*config.Params_MetricInfo{{InstanceName: "requestcount", Kind: config.Params_MetricInfo_COUNTER}},
		Librato:    &config.LibratoParams{TokenPath: "/etc/librato/token"},
		Prometheus: &config.PrometheusParams{RemoteWrite: &config.RemoteWrite{Url: "http://prom:9090/api/v1/write"}},
	}
	p, keys, err := resolve(t, in)
	require.NoError(t, err)
	require.Empty(t, in.Librato.Url, "normalizing must not modify its input")
	require.Equal(t, config.DefaultLibratoURL, p.Librato.Url)
	require.Equal(t, 60*time.Second, p.Librato.Period)
	require.EqualValues(t, 1000, p.Librato.MaxMeasurementsPerRequest)
	require.Equal(t, 15*time.Second, p.Prometheus.RemoteWrite.Interval)
	require.EqualValues(t, 2000, p.Prometheus.RemoteWrite.MaxSamplesPerSend)
	require.Equal(t, []string{"prometheus", "remote_write", "librato:http"}, keys)

	again, err := NormalizeParams(p)
	require.NoError(t, err)
	require.True(t, p.Equal(again), "normalizing must be idempotent")
}

func TestWhichSinksAConfigFeeds(t *testing.T) {
	gauge := []*config.Params_MetricInfo{{InstanceName: "a", Kind: config.Params_MetricInfo_GAUGE}}
	tests := []struct {
		name string
		p    *config.Params
		want []string
	}{
		{"no sink block: exposition", &config.Params{Metrics: gauge}, []string{"prometheus"}},
		{"librato only", &config.Params{Librato: &config.LibratoParams{Token: "t"}}, []string{"librato:http"}},
		{"the seed adapter's fields", &config.Params{LibratoToken: "t"}, []string{"librato:http"}}, //nolint:staticcheck // the seed adapter's field is the point
		{"librato and prometheus", &config.Params{Metrics: gauge, Librato: &config.LibratoParams{Token: "t"}, Prometheus: &config.PrometheusParams{}},
			[]string{"prometheus", "librato:http"}},
		{"remote write only", &config.Params{Metrics: gauge, Prometheus: &config.PrometheusParams{DisableExposition: true,
			RemoteWrite: &config.RemoteWrite{Url: "http://x"}}}, []string{"remote_write"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, keys, err := resolve(t, tc.p)
			require.NoError(t, err)
			require.Equal(t, tc.want, keys)
		})
	}
	_, _, err := resolve(t, &config.Params{Metrics: gauge, Prometheus: &config.PrometheusParams{DisableExposition: true}})
	require.ErrorIs(t, err, config.ErrInvalid)
	require.EqualError(t, err, "invalid handler config: prometheus.disable_exposition: the config sends to no sink: "+
		"exposition is off and no other backend is configured (prometheus.remote_write.url, librato)")
}

func TestBackendsReportEveryFieldError(t *testing.T) {
	tests := []struct {
		name   string
		p      *config.Params
		fields []string
	}{
		{"librato without token", &config.Params{Librato: &config.LibratoParams{Url: "ftp://x", Period: 1500 * time.Millisecond}},
			[]string{"librato.url", "librato.token_path", "librato.period"}},
		{"librato two token sources", &config.Params{Librato: &config.LibratoParams{Token: "a", TokenEnv: "B", MaxMeasurementsPerRequest: 5000}},
			[]string{"librato.token", "librato.max_measurements_per_request"}},
		{"librato period too short", &config.Params{Librato: &config.LibratoParams{Token: "a", Period: 500 * time.Millisecond}},
			[]string{"librato.period"}},
		{"remote write without url", &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "a", Kind: config.Params_MetricInfo_GAUGE}},
			Prometheus: &config.PrometheusParams{RemoteWrite: &config.RemoteWrite{Headers: map[string]string{"Content-Type": "x"}, MinBackoff: time.Minute}}},
			[]string{"prometheus.remote_write.url", "prometheus.remote_write.headers", "prometheus.remote_write.min_backoff"}},
		{"exposition without metrics", &config.Params{}, []string{"metrics"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := resolve(t, tc.p)
			require.ErrorIs(t, err, config.ErrInvalid)
			var fe config.FieldErrors
			require.True(t, errors.As(err, &fe))
			var fields []string
			for _, e := range fe {
				fields = append(fields, e.Field)
			}
			require.ElementsMatch(t, tc.fields, fields)
		})
	}
	_, _, err := resolve(t, &config.Params{Librato: &config.LibratoParams{Token: "a", Period: 500 * time.Millisecond}})
	require.EqualError(t, err, "invalid handler config: librato.period: must be at least 1s")
}
