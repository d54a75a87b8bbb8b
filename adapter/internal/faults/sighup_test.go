package faults_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/rwtest"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/tlstest"
	"github.com/meshmetrics/meshmetrics/config"
)

// countingDir is a Mixer-less config directory whose one handler counts
// HTTP entries with label config=<label> (one byte, so that a new label
// keeps the file's size).
func countingDir(t *testing.T, label string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(countingConfig(label)), 0o600))
	return dir
}

func countingConfig(label string) string {
	return fmt.Sprintf(`apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: counting, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "meshmetrics.istio-system:50000"}
  params:
    metrics:
    - {name: entries_total, instance_name: entrycount.instance.istio-system, kind: COUNTER, label_names: [config]}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: entrycount, namespace: istio-system}
spec:
  template: metric
  params:
    value: "1"
    dimensions: {config: '"%s"'}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: counting, namespace: istio-system}
spec:
  match: context.protocol == "http"
  actions: [{handler: counting, instances: [entrycount]}]
`, label)
}

// rewriteUnseen replaces a file's content and puts its modification time
// back, as a copy that preserves times does: a stat-based check sees no
// change when the size is the same too.
func rewriteUnseen(t *testing.T, path string, content []byte) {
	t.Helper()
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, content, 0o600))
	require.NoError(t, os.Chtimes(path, st.ModTime(), st.ModTime()))
}

// TestSIGHUPReloadsWhatTheFilesSayWithoutExiting runs the adapter binary
// with TLS, a token file, a remote-write sink reading a bearer token file
// and a Mixer-less config directory. Every file is then rewritten so that
// the adapter's own change checks (modification time, size) cannot see it:
// nothing changes until SIGHUP, after which the new certificate is served,
// the new token accepted, the sink sends with its new credential and the
// config directory is loaded again; the process keeps running, a reload
// that fails keeps the last good values, and SIGTERM still drains and
// exits 0.
func TestSIGHUPReloadsWhatTheFilesSayWithoutExiting(t *testing.T) {
	t.Parallel()
	bin := buildAdapter(t)
	ca := tlstest.NewCA(t, "mesh")
	first := ca.Issue(t, "first", tlstest.LeafOptions{CommonName: "first", Server: true, DNSNames: []string{"localhost"}})
	second := ca.Issue(t, "second", tlstest.LeafOptions{CommonName: "second", Server: true, DNSNames: []string{"localhost"}})
	secrets := t.TempDir()
	tokenFile := filepath.Join(secrets, "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("mixer-token-one"), 0o600))
	bearerFile := filepath.Join(secrets, "bearer")
	require.NoError(t, os.WriteFile(bearerFile, []byte("bearer-old"), 0o600))
	rw := rwtest.New(rwtest.WithBearerToken("bearer-new"))
	defer rw.Close()
	dir := countingDir(t, "A")

	p := run(t, bin, "--tls-cert="+first.CertFile, "--tls-key="+first.KeyFile, "--auth-token-file="+tokenFile,
		"--config-dir="+dir, "--log-every=1ns")
	served := func() string {
		conn, err := tls.Dial("tcp", p.grpc, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
		require.NoError(t, err)
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	conn, err := grpc.NewClient(p.grpc, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12})),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{})))
	require.NoError(t, err)
	defer conn.Close()
	cfg := anyOf(t, &config.Params{Metrics: []*config.Params_MetricInfo{requestsMetric},
		Prometheus: &config.PrometheusParams{DisableExposition: true, RemoteWrite: &config.RemoteWrite{
			Url: rw.URL(), BearerTokenFile: bearerFile, Interval: 100 * time.Millisecond, Timeout: time.Second}}})
	call := func(token string) error {
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", token)
		_, err := metricpb.NewHandleMetricServiceClient(conn).HandleMetric(ctx, &metricpb.HandleMetricRequest{AdapterConfig: cfg,
			Instances: []*metricpb.InstanceMsg{{Name: instanceName, Value: mt.Int(1), Dimensions: map[string]*policypb.Value{"path": mt.Str("/a")}}}})
		return err
	}
	reloads := func() float64 {
		return value(p.metrics(t), "meshmetrics_config_reloads_total", "", map[string]string{"result": "success"})
	}

	require.Equal(t, "first", served())
	require.NoError(t, call("mixer-token-one"))
	require.Equal(t, 1.0, reloads())
	require.Eventually(t, func() bool { return rw.Stats().ByStatus[401] > 0 }, 10*time.Second, 10*time.Millisecond,
		"the sink sends with the old bearer token, which the receiver refuses")

	// Rotate everything unseen: same sizes (the certificates' PEM may
	// differ in length, but the TLS check looks at times only) and times.
	for _, f := range [][2]string{{second.CertFile, first.CertFile}, {second.KeyFile, first.KeyFile}} {
		b, err := os.ReadFile(f[0])
		require.NoError(t, err)
		rewriteUnseen(t, f[1], b)
	}
	rewriteUnseen(t, tokenFile, []byte("mixer-token-two"))
	rewriteUnseen(t, bearerFile, []byte("bearer-new"))
	rewriteUnseen(t, filepath.Join(dir, "config.yaml"), []byte(countingConfig("B")))

	// Longer than every periodic check (TLS and token: 1s; the config
	// directory: 2s; the sink's file: every push): nothing is noticed.
	time.Sleep(2500 * time.Millisecond)
	require.Equal(t, "first", served())
	require.Equal(t, codes.Unauthenticated, status.Code(call("mixer-token-two")))
	require.Equal(t, 1.0, reloads())
	require.Zero(t, rw.Total(rwName))

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(p.log(), `"msg":"reloaded"`) }, 10*time.Second, 10*time.Millisecond, "%s", p.log())
	require.Equal(t, "second", served(), "the new certificate")
	require.NoError(t, call("mixer-token-two"), "the new token")
	require.Equal(t, codes.Unauthenticated, status.Code(call("mixer-token-one")))
	require.Equal(t, 2.0, reloads(), "the config directory was loaded again")
	require.Eventually(t, func() bool { return rw.Total(rwName) == 2 }, 10*time.Second, 10*time.Millisecond,
		"the sink sends with the new bearer token: both instances arrive")
	require.Contains(t, p.log(), `"reloaded":["TLS certificates","auth token","credentials of 1 sink","config directory `+dir+`"]`)

	// A reload that fails keeps what was loaded and the process.
	rewriteUnseen(t, tokenFile, []byte("  \n"))
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(p.log(), "reload incomplete") }, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, p.log(), "auth token (the previous one stays in use): auth token file: file "+tokenFile+" is empty")
	require.NoError(t, call("mixer-token-two"), "the last good token stays")
	require.NotContains(t, p.log(), "mixer-token-two", "no token in the logs")
	require.NotContains(t, p.log(), "bearer-new")

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, <-p.exited, "a clean exit after SIGTERM:\n%s", p.log())
	require.Contains(t, p.log(), "shutdown complete: nothing accepted was left unsent")
}
