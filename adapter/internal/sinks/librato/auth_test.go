package librato_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato/libratotest"
	"github.com/meshmetrics/meshmetrics/config"
)

func TestAuthForms(t *testing.T) {
	const token = "tok-0123456789abcdef"
	tests := []struct {
		name     string
		email    string
		source   func(t *testing.T, l *config.LibratoParams)
		wantAuth libratotest.AuthForm
	}{
		{"librato email and token", "ops@example.com",
			func(_ *testing.T, l *config.LibratoParams) { l.Token = token }, libratotest.AuthLibrato},
		{"appoptics token without email", "",
			func(_ *testing.T, l *config.LibratoParams) { l.Token = token }, libratotest.AuthAppOptics},
		{"token from an environment variable", "ops@example.com",
			func(t *testing.T, l *config.LibratoParams) {
				t.Setenv("MESHMETRICS_TEST_LIBRATO_TOKEN", " "+token+"\n")
				l.TokenEnv = "MESHMETRICS_TEST_LIBRATO_TOKEN"
			}, libratotest.AuthLibrato},
		{"token from a file, newline trimmed", "",
			func(t *testing.T, l *config.LibratoParams) {
				l.TokenPath = filepath.Join(t.TempDir(), "token")
				require.NoError(t, os.WriteFile(l.TokenPath, []byte(token+"\n"), 0o600))
			}, libratotest.AuthAppOptics},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessConfig{server: []libratotest.Option{libratotest.WithCredentials("ops@example.com", token)}})
			l := h.librato(func(l *config.LibratoParams) { l.Email, l.Token = tc.email, "" })
			tc.source(t, l)
			h.handle(h.params(l, requestsMetric), mt.Instance("requestcount.instance.istio-system", mt.Int(5)))
			h.flush()

			last, ok := h.srv.LastRequest()
			require.True(t, ok)
			require.Equal(t, tc.wantAuth, last.Auth)
			require.Equal(t, libratotest.OutcomeAccepted, last.Outcome)
			require.Equal(t, 5.0, h.srv.Total("istio.requests"))
			require.Equal(t, logging.Redacted, h.env.Secrets.RedactString(token), "the token is registered for redaction")
			require.NotContains(t, h.factory.Key(&config.Params{Librato: l}), token)
		})
	}
}

func TestTokenFileRotation(t *testing.T) {
	const tokA, tokB = "token-A-0123456789", "token-B-9876543210-longer"
	h := newHarness(t, harnessConfig{server: []libratotest.Option{libratotest.WithCredentials("ops@example.com", tokA)}})
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte(tokA+"\n"), 0o600))
	anyCfg := h.params(h.librato(func(l *config.LibratoParams) { l.Email, l.Token, l.TokenPath = "ops@example.com", "", path }), requestsMetric)

	h.handle(anyCfg, mt.Instance("requestcount.instance.istio-system", mt.Int(1)))
	h.flush()
	require.Equal(t, 1.0, h.srv.Total("istio.requests"))

	// The service rotates first: the old token is refused (401, dropped and
	// logged), and the error never shows the token.
	h.srv.SetCredentials("ops@example.com", tokB)
	h.handle(anyCfg, mt.Instance("requestcount.instance.istio-system", mt.Int(10)))
	h.flush()
	require.Equal(t, 1.0, h.dropped("backend_rejected"), "one instance")
	require.Contains(t, h.logs.String(), "Authorization Required")

	// Then the Secret is updated: the next request reads the new file.
	require.NoError(t, os.WriteFile(path, []byte(tokB+"\n"), 0o600))
	later := time.Now().Add(time.Minute)
	require.NoError(t, os.Chtimes(path, later, later))
	h.handle(anyCfg, mt.Instance("requestcount.instance.istio-system", mt.Int(100)))
	h.flush()
	require.Equal(t, 101.0, h.srv.Total("istio.requests"))
	require.Equal(t, logging.Redacted, h.env.Secrets.RedactString(tokB))

	// An emptied file (a Secret mid-update) keeps the last good token.
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	h.handle(anyCfg, mt.Instance("requestcount.instance.istio-system", mt.Int(1000)))
	h.flush()
	require.Equal(t, 1101.0, h.srv.Total("istio.requests"))
	require.Contains(t, h.logs.String(), "still using the previous one")

	for _, tok := range []string{tokA, tokB} {
		require.NotContains(t, h.logs.String(), tok, "the (unredacted) log never carries a token")
	}
}

func TestKey(t *testing.T) {
	f := librato.NewFactoryWith(newHarness(t, harnessConfig{}).env, librato.Options{})
	base := func() *config.Params {
		return &config.Params{Librato: &config.LibratoParams{Url: "https://user:pw@api.appoptics.com", Token: "secret-token-1",
			Tags: map[string]string{"a": "1", "b": "2", "c": "3", "d": "4"}}}
	}
	key := f.Key(base())
	require.Regexp(t, `^librato:https://api\.appoptics\.com#TAGGED#[0-9a-f]{12}$`, key, "user info and token stay out of the key")
	for range 20 {
		require.Equal(t, key, f.Key(base()), "stable whatever the map order")
	}
	other := base()
	other.Librato.Token = "secret-token-2"
	require.NotEqual(t, key, f.Key(other), "any change to the block makes a new sink")
	legacy := base()
	legacy.Librato.Api = config.LibratoParams_LEGACY
	require.Contains(t, f.Key(legacy), "#LEGACY#")
	require.Empty(t, f.Key(&config.Params{Metrics: []*config.Params_MetricInfo{requestsMetric}}), "no librato block: not this sink")
}

func TestCheck(t *testing.T) {
	f := librato.NewFactoryWith(newHarness(t, harnessConfig{}).env, librato.Options{})
	metric := func(ns, name string) *config.Params_MetricInfo {
		return &config.Params_MetricInfo{InstanceName: "i", Kind: config.Params_MetricInfo_GAUGE, Namespace: ns, Name: name}
	}
	many := map[string]string{}
	for i := range 50 {
		many[string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	tests := []struct {
		name    string
		mut     func(l *config.LibratoParams)
		metrics []*config.Params_MetricInfo
		want    string // "" = valid
	}{
		{name: "valid"},
		{name: "credentials in url", mut: func(l *config.LibratoParams) { l.Url = "https://u:p@example.com" }, want: "librato.url"},
		{name: "unset token env", mut: func(l *config.LibratoParams) { l.Token, l.TokenEnv = "", "MESHMETRICS_NO_SUCH_VAR" },
			want: "MESHMETRICS_NO_SUCH_VAR"},
		{name: "missing token file", mut: func(l *config.LibratoParams) { l.Token, l.TokenPath = "", "/nonexistent/token" },
			want: "/nonexistent/token"},
		{name: "bad constant tag", mut: func(l *config.LibratoParams) { l.Tags = map[string]string{"bad name": "v"} }, want: "librato.tags"},
		{name: "bad constant tag value", mut: func(l *config.LibratoParams) { l.Tags = map[string]string{"k": "é"} }, want: "librato.tags"},
		{name: "replica tag shadows a constant tag",
			mut: func(l *config.LibratoParams) { l.Tags, l.ReplicaTag = map[string]string{"Replica": "x"}, "replica" }, want: "librato.replica_tag"},
		{name: "51 fixed tags", mut: func(l *config.LibratoParams) { l.Tags, l.ReplicaTag = many, "replica" }, want: "exceed"},
		{name: "bad legacy source", mut: func(l *config.LibratoParams) { l.Api, l.Source = config.LibratoParams_LEGACY, "all" },
			want: "librato.source"},
		{name: "two metrics, one Librato name", metrics: []*config.Params_MetricInfo{metric("istio", "a b"), metric("istio", "A_b")},
			want: "metrics[2].name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := &config.LibratoParams{Token: "secret-token-1"}
			if tc.mut != nil {
				tc.mut(l)
			}
			p, err := config.Normalize(&config.Params{Librato: l, Metrics: append([]*config.Params_MetricInfo{metric("istio", "ok")}, tc.metrics...)})
			require.NoError(t, err)
			require.Empty(t, f.Normalize(p))
			err = f.Check(p, handler.MetricsOf(p))
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "secret-token-1")
		})
	}
}
