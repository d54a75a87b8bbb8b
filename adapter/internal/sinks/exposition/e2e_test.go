package exposition_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/exposition"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// TestEndToEndWithRealPrometheus sends instances through the adapter's gRPC
// API and reads them back from a real Prometheus server, which scrapes the
// adapter's /metrics and receives its remote writes.
func TestEndToEndWithRealPrometheus(t *testing.T) {
	bin := ensurePrometheus(t)

	a, err := adapter.New(adapter.Options{
		GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "e2e-replica",
		Log: quietLogger(), ShutdownTimeout: 10 * time.Second, Tick: 50 * time.Millisecond,
		Sinks: func(env sinks.Env, reg *prometheus.Registry) (map[string]sinks.Sink, []sinks.Factory, error) {
			expo := exposition.New(env)
			return map[string]sinks.Sink{exposition.Key: expo},
				[]sinks.Factory{exposition.NewFactory(expo), remotewrite.NewFactory(env)}, nil
		},
	})
	require.NoError(t, err)
	require.NoError(t, a.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})

	prom := startPrometheus(t, bin, a.HTTPAddr())

	// One handler config: exposition and remote write to the same server.
	p := &config.Params{
		Metrics: []*config.Params_MetricInfo{
			{InstanceName: "requestcount.instance.istio-system", Name: "requests_total", Kind: counterKind, LabelNames: []string{"path", "code"}},
			{InstanceName: "requestduration.instance.istio-system", Name: "request_duration_seconds", Kind: distKind, LabelNames: []string{"path"}},
		},
		Prometheus: &config.PrometheusParams{RemoteWrite: &config.RemoteWrite{
			Url: prom + "/api/v1/write", Interval: 500 * time.Millisecond,
			ExternalLabels: map[string]string{"cluster": "e2e"}, ReplicaLabel: "replica",
		}},
	}
	cfg := params(t, p)

	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{})))
	require.NoError(t, err)
	defer conn.Close()
	client := metricpb.NewHandleMetricServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ {
		var instances []*metricpb.InstanceMsg
		for j := 0; j < 3; j++ {
			instances = append(instances, mt.Instance("requestcount.instance.istio-system", mt.Int(1), "path", mt.Str("/a"), "code", mt.Int(200)))
		}
		instances = append(instances,
			mt.Instance("requestcount.instance.istio-system", mt.Int(2), "path", mt.Str("/b"), "code", mt.Int(503)),
			// 30ms to 220ms: the median is near 0.1s.
			mt.Instance("requestduration.instance.istio-system", mt.Duration(time.Duration(30+10*i)*time.Millisecond), "path", mt.Str("/a")))
		_, err := client.HandleMetric(ctx, &metricpb.HandleMetricRequest{Instances: instances, AdapterConfig: cfg, DedupId: strconv.Itoa(i)})
		require.NoError(t, err)
	}
	require.NoError(t, a.Flush(ctx))

	// Scraped: exact counter totals, a sane median.
	waitValue(t, prom, `istio_requests_total{job="meshmetrics",path="/a",code="200"}`, 60)
	waitValue(t, prom, `istio_requests_total{job="meshmetrics",path="/b",code="503"}`, 40)
	median := query(t, prom, `histogram_quantile(0.5, sum by (le) (istio_request_duration_seconds_bucket{job="meshmetrics"}))`)
	require.Len(t, median, 1)
	require.InDelta(t, 0.1, median[0].value, 0.06, "the median of 30..220ms, interpolated in the default buckets")

	// Remote-written: the same totals, with external and replica labels and
	// without the scrape's job label.
	waitValue(t, prom, `istio_requests_total{cluster="e2e",replica="e2e-replica",path="/a",code="200"}`, 60)
	got := query(t, prom, `istio_requests_total{cluster="e2e"}`)
	require.Len(t, got, 2)
	for _, s := range got {
		require.Equal(t, map[string]string{"__name__": "istio_requests_total", "cluster": "e2e", "replica": "e2e-replica",
			"path": s.labels["path"], "code": s.labels["code"]}, s.labels)
	}
	count := query(t, prom, `istio_request_duration_seconds_count{replica="e2e-replica"}`)
	require.Len(t, count, 1)
	require.Equal(t, 20.0, count[0].value)
	rwMedian := query(t, prom, `histogram_quantile(0.5, sum by (le) (istio_request_duration_seconds_bucket{replica="e2e-replica"}))`)
	require.Len(t, rwMedian, 1)
	require.Equal(t, median[0].value, rwMedian[0].value, "pushed buckets match scraped ones")
}

// ensurePrometheus returns the prometheus binary, installing the Debian
// package when it is absent (as root, or with sudo).
func ensurePrometheus(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("prometheus"); err == nil {
		return p
	}
	var sudo []string
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("sudo"); err != nil {
			t.Fatal("prometheus is not installed and neither root nor sudo is available to install it: run `make deps` as root")
		}
		sudo = []string{"sudo", "-n"}
	}
	run := func(args ...string) {
		cmd := exec.Command(append(sudo, args...)[0], append(sudo, args...)[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%v: %s", args, out)
	}
	run("apt-get", "update", "-qq")
	run("apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus")
	// The package may start a system Prometheus; the test uses its own.
	_ = exec.Command(append(sudo, "service", "prometheus", "stop")[0], append(sudo, "service", "prometheus", "stop")[1:]...).Run()
	p, err := exec.LookPath("prometheus")
	require.NoError(t, err, "prometheus installed but not on PATH")
	return p
}

// startPrometheus runs Prometheus on a free local port with a fresh data
// directory, scraping target every 250ms, and returns its base URL. It is
// stopped, and its directory removed, when the test ends.
func startPrometheus(t *testing.T, bin, target string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 250ms
  scrape_timeout: 200ms
scrape_configs:
  - job_name: meshmetrics
    static_configs:
      - targets: [%q]
`, target)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-remote-write-receiver", "--log.level=warn")
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("prometheus log:\n%s", b)
			}
		}
	})
	base := "http://" + addr
	require.Eventually(t, func() bool {
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, "prometheus did not become ready")
	return base
}

type promSample struct {
	labels map[string]string
	value  float64
}

func query(t *testing.T, base, q string) []promSample {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var r struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &r))
	var out []promSample
	for _, s := range r.Data.Result {
		v, err := strconv.ParseFloat(s.Value[1].(string), 64)
		require.NoError(t, err)
		out = append(out, promSample{labels: s.Metric, value: v})
	}
	return out
}

// waitValue waits until q gives one series whose value is want.
func waitValue(t *testing.T, base, q string, want float64) {
	t.Helper()
	var last []promSample
	ok := assertEventually(20*time.Second, func() bool {
		last = query(t, base, q)
		return len(last) == 1 && last[0].value == want
	})
	require.True(t, ok, "%s: want one series of value %g, got %+v", q, want, last)
}

func assertEventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}
