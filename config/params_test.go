package config_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/golden"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// TestDecodeSortedKeyParams decodes params bytes as Mixer writes them: in
// sorted-key order (instance_name, kind, label_names, name), which is not
// field-number order. Bytes are never compared with a canonical marshal.
func TestDecodeSortedKeyParams(t *testing.T) {
	raw, err := golden.ReadHex("handlemetric-analyticcounter.hex")
	require.NoError(t, err)
	var r metricpb.HandleMetricRequest
	require.NoError(t, r.Unmarshal(raw))

	p, err := config.Decode(r.AdapterConfig != nil, []byte(r.AdapterConfig.TypeUrl), r.AdapterConfig.Value)
	require.NoError(t, err)
	require.Len(t, p.Metrics, 1)
	m := p.Metrics[0]
	require.Equal(t, "analyticcounter.instance.istio-system", m.InstanceName)
	require.Equal(t, config.Params_MetricInfo_COUNTER, m.Kind)
	require.Equal(t, []string{"path"}, m.LabelNames)
	require.Equal(t, "damage_requests", m.Name)

	canonical, err := p.Marshal()
	require.NoError(t, err)
	require.NotEqual(t, r.AdapterConfig.Value, canonical, "sorted-key bytes differ from field order; only decoding may be compared")
}

func TestDecode(t *testing.T) {
	valid, err := (&config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "a", Kind: config.Params_MetricInfo_GAUGE}}}).Marshal()
	require.NoError(t, err)
	tests := []struct {
		name    string
		present bool
		typeURL string
		value   []byte
		metrics int
		errText string
	}{
		{"absent config", false, "", nil, 0, ""},
		{"empty params", true, config.TypeURL, nil, 0, ""},
		{"meshmetrics params", true, config.TypeURL, valid, 1, ""},
		{"seed librato adapter's type", true, config.LegacyLibratoTypeURL, []byte{0x0a, 0x01, 'e', 0x12, 0x01, 't'}, 0, ""},
		{"wrong type", true, "type.googleapis.com/adapter.prometheus.config.Params", valid, 0, `type_url "type.googleapis.com/adapter.prometheus.config.Params"`},
		{"garbage", true, config.TypeURL, []byte{0xff, 0xff, 0xff}, 0, "does not decode"},
		{"truncated", true, config.TypeURL, valid[:len(valid)-1], 0, "does not decode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := config.Decode(tc.present, []byte(tc.typeURL), tc.value)
			if tc.errText != "" {
				require.ErrorIs(t, err, config.ErrInvalid)
				require.ErrorContains(t, err, tc.errText)
				return
			}
			require.NoError(t, err)
			require.Len(t, p.Metrics, tc.metrics)
		})
	}
}

func TestNormalizeFillsDefaults(t *testing.T) {
	in := &config.Params{
		Metrics: []*config.Params_MetricInfo{
			{InstanceName: "requestcount.instance.istio-system", Kind: config.Params_MetricInfo_COUNTER},
			{InstanceName: "requestduration", Kind: config.Params_MetricInfo_DISTRIBUTION, Name: "request_duration_seconds", Namespace: "mesh"},
		},
		Librato:    &config.LibratoParams{TokenPath: "/etc/librato/token"},
		Prometheus: &config.PrometheusParams{RemoteWrite: &config.RemoteWrite{Url: "http://prom:9090/api/v1/write"}},
	}
	p, err := config.Normalize(in)
	require.NoError(t, err)
	require.Empty(t, in.Metrics[0].Name, "Normalize must not modify its input")

	require.Equal(t, "istio", p.Metrics[0].Namespace)
	require.Equal(t, "requestcount.instance.istio-system", p.Metrics[0].Name, "as Istio's adapter: the whole instance name")
	require.Equal(t, "requestcount.instance.istio-system", p.Metrics[0].Description)
	require.Equal(t, "mesh", p.Metrics[1].Namespace)
	require.EqualValues(t, config.DefaultMaxSeriesPerMetric, p.Limits.MaxSeriesPerMetric)
	require.Empty(t, p.Librato.Url, "a backend's block is its own factory's to normalize (adapter's TestBackendsNormalizeTheirBlocks)")

	again, err := config.Normalize(p)
	require.NoError(t, err)
	require.True(t, p.Equal(again), "Normalize must be idempotent")
}

func TestNormalizeMigratesSeedLibratoParams(t *testing.T) {
	// Exercising the deprecated fields is the point.
	p, err := config.Normalize(&config.Params{LibratoEmail: "ops@example.com", LibratoToken: "s3cret"})
	require.NoError(t, err)
	require.Equal(t, config.SeedAdapterURL, p.Librato.Url, "where the seed adapter posted")
	require.Empty(t, p.Librato.Email, "the seed authenticated with the token alone (AppOptics form)")
	require.Equal(t, "s3cret", p.Librato.Token)
}

func TestNormalizeReportsEveryFieldError(t *testing.T) {
	tests := []struct {
		name   string
		p      *config.Params
		fields []string
	}{
		{"missing instance and kind", &config.Params{Metrics: []*config.Params_MetricInfo{{}}},
			[]string{"metrics[0].instance_name", "metrics[0].kind"}},
		{"duplicate metric", &config.Params{Metrics: []*config.Params_MetricInfo{
			{InstanceName: "a", Name: "x", Kind: config.Params_MetricInfo_GAUGE},
			{InstanceName: "b", Name: "x", Kind: config.Params_MetricInfo_GAUGE}}},
			[]string{"metrics[1].name"}},
		{"duplicate label", &config.Params{Metrics: []*config.Params_MetricInfo{
			{InstanceName: "a", Kind: config.Params_MetricInfo_GAUGE, LabelNames: []string{"x", "x", ""}}}},
			[]string{"metrics[0].label_names[1]", "metrics[0].label_names[2]"}},
		{"buckets on a counter", &config.Params{Metrics: []*config.Params_MetricInfo{
			{InstanceName: "a", Kind: config.Params_MetricInfo_COUNTER, Buckets: explicit(1)}}},
			[]string{"metrics[0].buckets"}},
		{"decreasing bounds", &config.Params{Metrics: []*config.Params_MetricInfo{
			{InstanceName: "a", Kind: config.Params_MetricInfo_DISTRIBUTION, Buckets: explicit(2, 1)}}},
			[]string{"metrics[0].buckets"}},
		{"bad linear", &config.Params{Metrics: []*config.Params_MetricInfo{
			{InstanceName: "a", Kind: config.Params_MetricInfo_DISTRIBUTION, Buckets: &config.Params_MetricInfo_BucketsDefinition{
				Definition: &config.Params_MetricInfo_BucketsDefinition_LinearBuckets{LinearBuckets: &config.Params_MetricInfo_BucketsDefinition_Linear{NumFiniteBuckets: 3}}}}}},
			[]string{"metrics[0].buckets"}},
		{"expiry zero", &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "a", Kind: config.Params_MetricInfo_GAUGE}},
			MetricsExpirationPolicy: &config.Params_MetricsExpirationPolicy{}},
			[]string{"metrics_expiration_policy.metrics_expiry_duration"}},
		{"both seed and new librato params", &config.Params{LibratoEmail: "a", Librato: &config.LibratoParams{TokenEnv: "T"}},
			[]string{"librato_email"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Normalize(tc.p)
			require.ErrorIs(t, err, config.ErrInvalid)
			var fe config.FieldErrors
			require.True(t, errors.As(err, &fe))
			var got []string
			for _, e := range fe {
				got = append(got, e.Field)
			}
			require.ElementsMatch(t, tc.fields, got, err.Error())
		})
	}
}

func explicit(bounds ...float64) *config.Params_MetricInfo_BucketsDefinition {
	return &config.Params_MetricInfo_BucketsDefinition{Definition: &config.Params_MetricInfo_BucketsDefinition_ExplicitBuckets{
		ExplicitBuckets: &config.Params_MetricInfo_BucketsDefinition_Explicit{Bounds: bounds}}}
}

func TestBucketBoundsMatchIstio(t *testing.T) {
	lin, err := config.BucketBounds(&config.Params_MetricInfo_BucketsDefinition{Definition: &config.Params_MetricInfo_BucketsDefinition_LinearBuckets{
		LinearBuckets: &config.Params_MetricInfo_BucketsDefinition_Linear{NumFiniteBuckets: 3, Width: 10, Offset: 5}}})
	require.NoError(t, err)
	require.Equal(t, []float64{5, 15, 25, 35}, lin)
	exp, err := config.BucketBounds(&config.Params_MetricInfo_BucketsDefinition{Definition: &config.Params_MetricInfo_BucketsDefinition_ExponentialBuckets{
		ExponentialBuckets: &config.Params_MetricInfo_BucketsDefinition_Exponential{NumFiniteBuckets: 8, Scale: 1, GrowthFactor: 10}}})
	require.NoError(t, err)
	require.Equal(t, []float64{1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8}, exp)
	def, err := config.BucketBounds(nil)
	require.NoError(t, err)
	require.Equal(t, config.DefaultBuckets, def)
}

func TestRedactedHidesEverySecret(t *testing.T) {
	p := &config.Params{
		LibratoToken: "seed-token",
		Librato:      &config.LibratoParams{Email: "ops@example.com", Token: "librato-token"},
		Prometheus: &config.PrometheusParams{RemoteWrite: &config.RemoteWrite{Url: "http://x",
			BasicAuth: &config.BasicAuth{Username: "u", Password: "rw-password"}}},
	}
	r := config.Redacted(p)
	text := r.String()
	for _, secret := range []string{"librato-token", "rw-password"} {
		require.NotContains(t, text, secret)
	}
	require.Contains(t, text, config.RedactedValue)
	require.Contains(t, text, "ops@example.com", "non-secrets stay visible")
	require.Equal(t, "librato-token", p.Librato.Token, "the input is not modified")
	require.True(t, strings.Contains(text, "u"))
}

func TestShortInstanceName(t *testing.T) {
	for in, want := range map[string]string{
		"requestcount.instance.istio-system": "requestcount",
		"requestcount.metric.istio-system":   "requestcount",
		"requestcount":                       "requestcount",
		"a.b":                                "a.b",
		"my.dotted.name.instance.ns":         "my.dotted.name",
	} {
		require.Equal(t, want, config.ShortInstanceName(in), in)
	}
}

func TestHugeConfigsAreRefusedBeforeTheyAllocate(t *testing.T) {
	huge := &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "a", Kind: config.Params_MetricInfo_DISTRIBUTION,
		Buckets: &config.Params_MetricInfo_BucketsDefinition{Definition: &config.Params_MetricInfo_BucketsDefinition_LinearBuckets{
			LinearBuckets: &config.Params_MetricInfo_BucketsDefinition_Linear{NumFiniteBuckets: 2000000000, Width: 1}}}}}}
	_, err := config.Normalize(huge)
	require.ErrorContains(t, err, "metrics[0].buckets: linear_buckets.num_finite_buckets must be between 1 and 1000")

	many := &config.Params{}
	for i := 0; i <= config.MaxMetricsPerConfig; i++ {
		many.Metrics = append(many.Metrics, &config.Params_MetricInfo{InstanceName: "a", Kind: config.Params_MetricInfo_GAUGE})
	}
	_, err = config.Normalize(many)
	require.ErrorContains(t, err, "at most 10000 per handler config")

	thousand := &config.Params{}
	for i := 0; i < 1000; i++ {
		thousand.Metrics = append(thousand.Metrics, &config.Params_MetricInfo{InstanceName: "a", Kind: config.Params_MetricInfo_GAUGE,
			Name: "m" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + fmt.Sprint(i)})
	}
	p, err := config.Normalize(thousand)
	require.NoError(t, err, "a thousand metrics is a legitimate config")
	require.Len(t, p.Metrics, 1000)
}

// TestBucketBoundsAreCheckedOnceComputed: the limits are those the docs
// give (1,000 finite buckets), and computed bounds must be finite and
// increase strictly.
func TestBucketBoundsAreCheckedOnceComputed(t *testing.T) {
	linear := func(n int32, width, offset float64) *config.Params_MetricInfo_BucketsDefinition {
		return &config.Params_MetricInfo_BucketsDefinition{Definition: &config.Params_MetricInfo_BucketsDefinition_LinearBuckets{
			LinearBuckets: &config.Params_MetricInfo_BucketsDefinition_Linear{NumFiniteBuckets: n, Width: width, Offset: offset}}}
	}
	exponential := func(n int32, growth, scale float64) *config.Params_MetricInfo_BucketsDefinition {
		return &config.Params_MetricInfo_BucketsDefinition{Definition: &config.Params_MetricInfo_BucketsDefinition_ExponentialBuckets{
			ExponentialBuckets: &config.Params_MetricInfo_BucketsDefinition_Exponential{NumFiniteBuckets: n, GrowthFactor: growth, Scale: scale}}}
	}
	thousand := make([]float64, config.MaxBuckets)
	for i := range thousand {
		thousand[i] = float64(i)
	}
	tests := []struct {
		name   string
		def    *config.Params_MetricInfo_BucketsDefinition
		bounds int
		err    string
	}{
		{"linear, 1,000 finite buckets (the documented limit)", linear(1000, 1, 0), 1001, ""},
		{"linear, 1,001", linear(1001, 1, 0), 0, "between 1 and 1000"},
		{"exponential, 1,000", exponential(1000, 1.5, 1e-300), 1001, ""},
		{"explicit, 1,000 bounds", explicit(thousand...), 1000, ""},
		{"explicit, 1,001 bounds", explicit(append(thousand, 1e6)...), 0, "1 to 1000 bounds"},
		{"linear overflowing to +Inf", linear(10, 1e308, 1e308), 0, "linear_buckets: bound 1 is +Inf: every bound must be finite"},
		{"linear below the offset's precision", linear(3, 1, 1e17), 0, "linear_buckets: bound 1 (1e+17) is not above bound 0 (1e+17)"},
		{"exponential overflowing", exponential(1000, 10, 1), 0, "exponential_buckets: bound 309 is +Inf"},
		{"exponential, a growth too small to tell", exponential(2, 1.0000000000000002, 5e-324), 0, "not above"},
		{"explicit, not increasing", explicit(1, 1), 0, "explicit_buckets: bound 1 (1) is not above bound 0 (1)"},
		{"explicit, infinite", explicit(1, math.Inf(1)), 0, "every bound must be finite"},
	}
	for _, tc := range tests {
		got, err := config.BucketBounds(tc.def)
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, tc.name)
			continue
		}
		require.NoError(t, err, tc.name)
		require.Len(t, got, tc.bounds, tc.name)
	}
}
