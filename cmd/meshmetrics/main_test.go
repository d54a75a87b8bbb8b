package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFlagsEnvironmentAndTLSConvention(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, s *settings)
		err   string
	}{
		{"defaults", nil, nil, func(t *testing.T, s *settings) {
			require.Equal(t, ":50000", s.opts.GRPCAddress)
			require.Equal(t, ":42422", s.opts.HTTPAddress)
			require.Equal(t, 64<<20, s.opts.MaxRecvMsgSize)
			require.Equal(t, "text", s.logFormat)
		}, ""},
		{"environment", nil, map[string]string{"MESHMETRICS_GRPC_ADDRESS": ":9000", "MESHMETRICS_SHUTDOWN_TIMEOUT": "7s", "MESHMETRICS_LOG_FORMAT": "json"},
			func(t *testing.T, s *settings) {
				require.Equal(t, ":9000", s.opts.GRPCAddress)
				require.Equal(t, 7*time.Second, s.opts.ShutdownTimeout)
				require.Equal(t, "json", s.logFormat)
			}, ""},
		{"flag beats environment", []string{"--grpc-address", ":1"}, map[string]string{"MESHMETRICS_GRPC_ADDRESS": ":9000"},
			func(t *testing.T, s *settings) { require.Equal(t, ":1", s.opts.GRPCAddress) }, ""},
		{"walkthrough TLS variables", nil, map[string]string{"GRPC_ADAPTER_CREDENTIAL": "c.pem", "GRPC_ADAPTER_PRIVATE_KEY": "k.pem", "GRPC_ADAPTER_CERTIFICATE": "ca.pem"},
			func(t *testing.T, s *settings) {
				require.Equal(t, "c.pem", s.opts.TLS.Cert)
				require.Equal(t, "k.pem", s.opts.TLS.Key)
				require.Equal(t, "ca.pem", s.opts.TLS.ClientCA)
			}, ""},
		{"TLS flag beats walkthrough variable", []string{"--tls-cert", "flag.pem"}, map[string]string{"GRPC_ADAPTER_CREDENTIAL": "env.pem"},
			func(t *testing.T, s *settings) { require.Equal(t, "flag.pem", s.opts.TLS.Cert) }, ""},
		{"spool flags", []string{"--spool-dir", "/var/spool/meshmetrics"}, map[string]string{"MESHMETRICS_SPOOL_MAX_BYTES": "1048576"},
			func(t *testing.T, s *settings) {
				require.Equal(t, "/var/spool/meshmetrics", s.opts.SpoolDir)
				require.Equal(t, int64(1<<20), s.opts.SpoolMaxBytes)
			}, ""},
		{"spool off by default", nil, nil, func(t *testing.T, s *settings) {
			require.Empty(t, s.opts.SpoolDir)
			require.Equal(t, int64(1<<30), s.opts.SpoolMaxBytes)
		}, ""},
		{"bad environment value", nil, map[string]string{"MESHMETRICS_MAX_SERIES": "many"}, nil, `MESHMETRICS_MAX_SERIES="many"`},
		{"stray argument", []string{"serve"}, nil, nil, "unexpected arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parse(tc.args, func(k string) string { return tc.env[k] }, &bytes.Buffer{})
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			tc.check(t, s)
		})
	}
}

func TestHelpNamesEveryFlagAndItsVariable(t *testing.T) {
	var out bytes.Buffer
	_, err := parse([]string{"--help"}, func(string) string { return "" }, &out)
	require.True(t, errors.Is(err, flag.ErrHelp))
	for _, want := range []string{"--grpc-address (default :50000, env MESHMETRICS_GRPC_ADDRESS)", "--tls-client-ca", "GRPC_ADAPTER_CERTIFICATE",
		"--shutdown-timeout", "terminationGracePeriodSeconds", "--max-connection-age"} {
		require.Contains(t, out.String(), want)
	}
}

func TestCommandsAreNeverSetFromTheEnvironment(t *testing.T) {
	for _, v := range []string{"1.6.0", "true"} {
		s, err := parse(nil, func(k string) string {
			if k == "MESHMETRICS_VERSION" {
				return v
			}
			return ""
		}, &bytes.Buffer{})
		require.NoError(t, err, "MESHMETRICS_VERSION=%s", v)
		require.False(t, s.version, "MESHMETRICS_VERSION=%s must not make the process print its version and exit", v)
	}
	s, err := parse([]string{"--version"}, func(string) string { return "" }, &bytes.Buffer{})
	require.NoError(t, err)
	require.True(t, s.version)
}

func TestFlagErrorsUseTheUsersSpelling(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "flag provided but not defined: --bogus (see --help)"},
		{[]string{"-bogus"}, "flag provided but not defined: -bogus (see --help)"},
		{[]string{"--max-series=many"}, `invalid value "many" for flag --max-series: parse error (see --help)`},
		{[]string{"--max-series", "many"}, `invalid value "many" for flag --max-series: parse error (see --help)`},
	}
	for _, tc := range tests {
		var out bytes.Buffer
		_, err := parse(tc.args, func(string) string { return "" }, &out)
		require.EqualError(t, err, tc.want, "%v", tc.args)
		require.Empty(t, out.String(), "an error is reported once, not followed by the whole usage")
	}
}

func TestVersionSaysVersionCommitAndGo(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"--version"}, func(string) string { return "" }, &out, nil))
	b := buildInfo()
	require.Equal(t, versionLine(b)+"\n", out.String())
	require.Contains(t, out.String(), runtime.Version())
	require.NotEmpty(t, b.Version)
	require.NotEmpty(t, b.Revision)
}
