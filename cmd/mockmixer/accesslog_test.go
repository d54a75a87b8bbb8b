package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/tlstest"
)

// samplesAdapter runs meshmetrics in-process with the seed's analyticprom
// samples as its config directory.
func samplesAdapter(t *testing.T, tweak func(*adapter.Options)) *mixertest.Adapter {
	t.Helper()
	return mixertest.StartAdapter(t, mixertest.AdapterOptions{ConfigDir: samplesDir(t), Tweak: tweak})
}

// samplesDir is a config directory of the seed's analyticprom samples.
func samplesDir(t *testing.T) string {
	t.Helper()
	return mixertest.ConfigDir(t, []string{root("deploy", "kubernetes", "samples", "analyticcounter.yaml"),
		root("deploy", "kubernetes", "samples", "analyticprom-prometheus.yaml")})
}

func analyticEntries() string { return root("testdata", "accesslog", "analytic.yaml") }

// analyticTotal sums the analytic counter over its series.
func analyticTotal(t *testing.T, a *mixertest.Adapter) int {
	t.Helper()
	n := 0
	for k, v := range a.Recorded(t).Series() {
		require.True(t, strings.HasPrefix(k, "istio_analytic_requests"), k)
		n += v.Count
	}
	return n
}

func TestAccesslog(t *testing.T) {
	a := samplesAdapter(t, nil)
	url := metricsURL(a)
	r := mockmixer(t, "accesslog", "--address", a.GRPCAddr(), "--entries", analyticEntries(), "--entries-per-message", "4", "--log-name", "als",
		"--metrics-url", url)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "StreamAccessLogs v3 -> "+a.GRPCAddr()+" (node mockmixer, log_name als)\n")
	require.Contains(t, r.stdout, "  message 1: 4 HTTP entries, ")
	require.Contains(t, r.stdout, "  message 4: 1 TCP entry, ")
	require.Contains(t, r.stdout, "    "+analyticEntries()+":24  HTTP POST damage.shop:8080/v1/damage?analytic=2 -> 201, 10.1.0.7:45678 -> 10.1.2.3:8080, "+
		"cluster inbound|8080|http|damage.shop.svc.cluster.local, 12ms, downstream_peer batch\n")
	require.Contains(t, r.stdout, "<- OK: the stream is answered, every entry processed")
	// The TCP entry has no request.path: the rule's match fails to evaluate,
	// which is no match, as in Mixer, and loses nothing.
	require.True(t, strings.HasSuffix(r.stdout, "summary: 1 stream (0 failed), 4 messages, 11 entries (10 HTTP, 1 TCP)\n"+
		"adapter: no instance dropped or rejected by the adapter; access-log path: 1 skipped [match_error 1], none lost ("+url+")\n"), r.stdout)
	require.Equal(t, mixertest.Aggregate{Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1},
		a.Recorded(t).Series()[mixertest.Key("istio_analytic_requests", "/v1/damage?analytic=2", "POST", "201", "damage", "batch")])
	require.Equal(t, 6, analyticTotal(t, a), "six of the entries match the rule")

	// v2, twice over, quietly: what Istio 1.7's sidecars send.
	r = mockmixer(t, "accesslog", "--address", a.GRPCAddr(), "--entries", analyticEntries(), "--api", "v2", "-r", "2", "-q", "--metrics-url", url)
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Equal(t, "summary: 1 stream (0 failed), 4 messages, 22 entries (20 HTTP, 2 TCP)\n"+
		"adapter: no instance dropped or rejected by the adapter; access-log path: 2 skipped [match_error 2], none lost ("+url+")\n", r.stdout)
	require.Equal(t, 18, analyticTotal(t, a))
	require.Equal(t, 2.0, a.Series(t, "meshmetrics_accesslog_entries_received_total")[`{api="v2",protocol="tcp"}`])

	// -v prints each entry in full.
	r = mockmixer(t, "accesslog", "--address", a.GRPCAddr(), "--entries", write(t, "one.yaml", "- {path: '/v1/damage?analytic=9', user_agent: test-agent}\n"), "-v")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, `"userAgent":"test-agent"`)
}

func TestAccesslogErrors(t *testing.T) {
	entries := analyticEntries()
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no entries", []string{"--address", "127.0.0.1:1"}, "--entries is required"},
		{"no address", []string{"--entries", entries}, "--address is required"},
		{"bad api", []string{"--address", "x", "--entries", entries, "--api", "v4"}, `--api "v4": want v3 or v2`},
		{"bad entries", []string{"--address", "x", "--entries", write(t, "bad.yaml", "- {code: 200}\n- {code: ok}\n")}, `bad.yaml:2: code: want a whole number, got "ok"`},
		{"missing file", []string{"--address", "x", "--entries", filepath.Join(t.TempDir(), "none.yaml")}, "none.yaml: no such file"},
		{"no handler", []string{"--entries", entries, "-f", root("deploy", "kubernetes", "samples", "analyticprom-prometheus.yaml"), "--handler", "nosuch"}, `no handler "nosuch"`},
		{"stray argument", []string{"--entries", entries, "extra"}, `unexpected arguments ["extra"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mockmixer(t, append([]string{"accesslog"}, tt.args...)...)
			require.Equal(t, exitUsage, r.code, r.stderr)
			require.Contains(t, r.stderr, tt.stderr)
			require.Empty(t, r.stdout, "nothing is sent when the input is wrong")
		})
	}

	// No adapter listening: the stream fails and so does the command.
	r := mockmixer(t, "accesslog", "--address", "127.0.0.1:1", "--entries", entries, "-q")
	require.Equal(t, exitFailed, r.code)
	require.Contains(t, r.stdout, "summary: 1 stream (1 failed), 0 messages")

	// An adapter without --config-dir does not serve the Access Log Service.
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{})
	r = mockmixer(t, "accesslog", "--address", a.GRPCAddr(), "--entries", entries)
	require.Equal(t, exitFailed, r.code)
	require.Contains(t, r.stdout, "<- Unimplemented:")
}

// authHandler is a handler whose connection.authentication says how to
// reach the adapter: what -f and --handler read.
func authHandler(t *testing.T, auth string) string {
	return write(t, "handler.yaml", fmt.Sprintf(`apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: secure, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection:
    address: meshmetrics.istio-system.svc.cluster.local:50000
    authentication: %s
  params: {metrics: []}
`, auth))
}

// TestAccesslogAuthentication reaches an adapter serving TLS with a token,
// then mutual TLS, with the options of a handler's connection.authentication,
// as the other commands do.
func TestAccesslogAuthentication(t *testing.T) {
	ca := tlstest.NewCA(t, "mesh")
	t.Run("TLS and a token", func(t *testing.T) {
		server := ca.Issue(t, "adapter", tlstest.LeafOptions{Server: true, DNSNames: []string{"meshmetrics.local"}})
		tokenFile := write(t, "token", "s3cr3t\n")
		a := samplesAdapter(t, func(o *adapter.Options) {
			o.TLS.Cert, o.TLS.Key = server.CertFile, server.KeyFile
			o.AuthTokenFile, o.AuthHeader = tokenFile, "authorization"
		})
		handler := authHandler(t, fmt.Sprintf("{tls: {caCertificates: %s, serverName: meshmetrics.local, tokenPath: %s, authHeader: BEARER}}", ca.File, tokenFile))
		r := mockmixer(t, "accesslog", "-f", handler, "--handler", "secure", "--address", a.GRPCAddr(), "--entries", analyticEntries(), "-q")
		require.Equal(t, exitOK, r.code, r.stdout+r.stderr)
		require.Equal(t, 6, analyticTotal(t, a))

		// The load generator takes the same options.
		r = mockmixer(t, "accesslog-load", "-f", handler, "--handler", "secure", "--address", a.GRPCAddr(), "-n", "3", "--streams", "1",
			"--entries", analyticEntries(), "--entries-per-message", "10")
		require.Equal(t, exitOK, r.code, r.stdout+r.stderr)
		require.Equal(t, 6+3*6, analyticTotal(t, a))

		// Without the token, the adapter refuses the stream.
		noToken := authHandler(t, fmt.Sprintf("{tls: {caCertificates: %s, serverName: meshmetrics.local, tokenPath: %s, authHeader: PLAIN}}",
			ca.File, write(t, "wrong", "wrong")))
		r = mockmixer(t, "accesslog", "-f", noToken, "--address", a.GRPCAddr(), "--entries", analyticEntries())
		require.Equal(t, exitFailed, r.code)
		require.Contains(t, r.stdout, "<- Unauthenticated:")
		require.NotContains(t, r.stdout, "s3cr3t")
	})
	t.Run("mutual TLS", func(t *testing.T) {
		server := ca.Issue(t, "adapter", tlstest.LeafOptions{Server: true, URIs: []string{tlstest.MixerSPIFFE}})
		client := ca.Issue(t, "mixer", tlstest.LeafOptions{Client: true, URIs: []string{tlstest.MixerSPIFFE}})
		a := samplesAdapter(t, func(o *adapter.Options) {
			o.TLS.Cert, o.TLS.Key, o.TLS.ClientCA = server.CertFile, server.KeyFile, ca.File
		})
		handler := authHandler(t, fmt.Sprintf("{mutual: {privateKey: %s, clientCertificate: %s, caCertificates: %s}}", client.KeyFile, client.CertFile, ca.File))
		r := mockmixer(t, "accesslog", "-f", handler, "--address", a.GRPCAddr(), "--entries", analyticEntries(), "-q")
		require.Equal(t, exitOK, r.code, r.stdout+r.stderr)
		require.Equal(t, 6, analyticTotal(t, a))

		// Plaintext is refused.
		r = mockmixer(t, "accesslog", "--address", a.GRPCAddr(), "--entries", analyticEntries(), "-q", "--timeout", "2s")
		require.Equal(t, exitFailed, r.code)
	})
}

func TestAccesslogLoad(t *testing.T) {
	a := samplesAdapter(t, nil)
	// Realistic entries: two of the five paths are analytic calls.
	r := mockmixer(t, "accesslog-load", "--address", a.GRPCAddr(), "-n", "20", "--streams", "2", "--conns", "1", "--entries-per-message", "5",
		"--messages-per-stream", "4", "--output", "json")
	require.Equal(t, exitOK, r.code, r.stderr)
	var rep loadReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.Equal(t, int64(20), rep.Messages)
	require.Equal(t, int64(100), rep.Entries)
	require.Equal(t, int64(5), rep.Streams)
	require.Equal(t, 2, rep.Settings.Streams)
	require.Equal(t, 1, rep.Settings.Conns)
	require.Equal(t, "realistic sidecar entries", rep.Settings.Entries)
	require.Equal(t, 40, analyticTotal(t, a), "every processed entry of /v1/damage?analytic=*: two in five")

	// From an entries file, in text.
	r = mockmixer(t, "accesslog-load", "--address", a.GRPCAddr(), "-n", "4", "--streams", "1", "--entries", analyticEntries(),
		"--entries-per-message", "10", "--api", "v2")
	require.Equal(t, exitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "target        "+a.GRPCAddr()+" (v2), 1 streams over 1 connections\n")
	require.Contains(t, r.stdout, "messages      4 (up to 10 entries of "+analyticEntries()+" each")
	require.Contains(t, r.stdout, "errors        none\n")
	require.Contains(t, r.stdout, "send latency  p50 ")
	require.Contains(t, r.stdout, "close latency p50 ")
	// The file cycled, HTTP entries in messages of their own first: the
	// four messages are the file's ten HTTP entries four times.
	require.Equal(t, 40+4*6, analyticTotal(t, a))

	// No adapter: the streams fail, counted by code.
	r = mockmixer(t, "accesslog-load", "--address", "127.0.0.1:1", "-n", "5", "--streams", "1")
	require.Equal(t, exitFailed, r.code)
	require.Contains(t, r.stdout, "errors        5 failed streams: Unavailable 5 (0 messages sent on them unconfirmed)")

	for _, args := range [][]string{{}, {"--address", "x", "--output", "xml"}, {"--address", "x", "--rate", "-1"}, {"--address", "x", "--streams", "0"},
		{"--address", "x", "--entries", write(t, "bad.yaml", "- x\n")}} {
		r = mockmixer(t, append([]string{"accesslog-load"}, args...)...)
		require.Equal(t, exitUsage, r.code, args)
	}
}

func TestAccesslogUsage(t *testing.T) {
	r := mockmixer(t, "help")
	require.Contains(t, r.stdout, "mockmixer accesslog [flags]")
	require.Contains(t, r.stdout, "mockmixer accesslog-load [flags]")
	for _, cmd := range []string{"accesslog", "accesslog-load"} {
		r = mockmixer(t, cmd, "-h")
		require.Equal(t, exitOK, r.code)
		require.Contains(t, r.stderr, "Usage: mockmixer "+cmd)
	}
	r = mockmixer(t, "accesslog", "-h")
	require.Contains(t, r.stderr, "source_peer: {WORKLOAD_NAME: productpage-v1", "the entries format is in the help")
}

// TestAccessLogCommandsPrintTheAdaptersDropsAndFailOnThem: the stream is
// answered OK, but the adapter skipped a message of more entries than it
// takes (lost input), and a load's series went past the sink's cap: both
// commands say so from the adapter's own counters and exit 1 unless
// --allow-drops.
func TestAccessLogCommandsPrintTheAdaptersDropsAndFailOnThem(t *testing.T) {
	a := samplesAdapter(t, func(o *adapter.Options) { o.ALS.MaxEntriesPerMessage = 3 })
	send := []string{"accesslog", "--address", a.GRPCAddr(), "--metrics-url", metricsURL(a), "--entries", analyticEntries(), "--entries-per-message", "4", "-q"}
	r := mockmixer(t, send...)
	require.Equal(t, exitFailed, r.code, r.stdout+r.stderr)
	// Messages of 4, 4 and 2 HTTP entries, then the TCP entry: the two of 4
	// are skipped whole; of the rest, the TCP entry fails the match.
	require.Equal(t, "summary: 1 stream (0 failed), 4 messages, 11 entries (10 HTTP, 1 TCP)\n"+
		"adapter: no instance dropped or rejected by the adapter; access-log path: 9 skipped [match_error 1, too_many_entries 8] ("+metricsURL(a)+")\n", r.stdout)
	require.Equal(t, 8.0, a.Series(t, "meshmetrics_accesslog_skipped_total")[`{reason="too_many_entries"}`])

	r = mockmixer(t, append(send, "--allow-drops")...)
	require.Equal(t, exitOK, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "access-log path: 9 skipped [match_error 1, too_many_entries 8]", "counted over this run only")

	// The adapter's own Prometheus sink this time, whose cap is --max-series.
	b := mixertest.StartAdapter(t, mixertest.AdapterOptions{ConfigDir: samplesDir(t), BuiltinSinks: true, Tweak: func(o *adapter.Options) { o.MaxSeries = 2 }})
	load := []string{"accesslog-load", "--address", b.GRPCAddr(), "--metrics-url", metricsURL(b), "-n", "1", "--streams", "1",
		"--entries", analyticEntries(), "--entries-per-message", "20", "--ring", "1"}
	r = mockmixer(t, load...)
	require.Equal(t, exitFailed, r.code, r.stdout+r.stderr)
	require.Contains(t, r.stdout, "errors        none", "the stream was answered")
	require.Regexp(t, `adapter       \d+ instances dropped \[sink_series_limit \(prometheus\) \d+\]`, r.stdout)
	r = mockmixer(t, append(load, "--allow-drops", "--output", "json")...)
	require.Equal(t, exitOK, r.code, r.stdout+r.stderr)
	var out loadReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	require.NotNil(t, out.Adapter)
	require.Positive(t, out.Adapter.Dropped["sink_series_limit (prometheus)"])
}
