package main

import (
	"bytes"
	"errors"
	"flag"
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
