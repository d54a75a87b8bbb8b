package faults_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/config"
)

// The HTTP port (the third and tenth findings), against the binary.

// TestTwentyThousandKeepAliveConnections: 20,000 clients each open a
// connection, get /healthz and keep the connection open. The adapter holds
// at most --http-max-connections (512) of them: past the cap the one idle
// longest is closed to make room (counted), so its descriptors stay far
// below the process's limit, and a probe of /healthz on a new connection,
// every 1,000 connections, is answered throughout.
func TestTwentyThousandKeepAliveConnections(t *testing.T) {
	const (
		total   = 20000
		keep    = 2000 // the client's own descriptors
		maxConn = config.DefaultHTTPMaxConnections
	)
	p := run(t, buildAdapter(t))
	pid := p.cmd.Process.Pid
	fdsBefore := openFiles(t, pid)
	limit := procLimit(t, pid)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	maxFDs, probes := 0, 0
	for i := range total {
		c, err := net.Dial("tcp", p.http)
		require.NoError(t, err)
		// Served, then idle: a keep-alive connection (or closed at once to
		// make room, if it was the one idle longest: the client goes on).
		_ = healthz(c)
		held = append(held, c)
		if len(held) > keep {
			held[0].Close()
			held = held[1:]
		}
		if i%1000 == 999 {
			probe, err := net.Dial("tcp", p.http)
			require.NoError(t, err)
			require.True(t, healthz(probe), "/healthz answers after %d connections", i+1)
			probe.Close()
			probes++
			maxFDs = max(maxFDs, openFiles(t, pid))
		}
	}
	m := p.metrics(t)
	evicted := value(m, "meshmetrics_http_connections_evicted_total", "", nil)
	t.Logf("figures %s: %d keep-alive connections, %d probes answered; adapter descriptors %d before, at most %d during (limit %d); %.0f evicted",
		t.Name(), total, probes, fdsBefore, maxFDs, limit, evicted)
	require.LessOrEqual(t, maxFDs, fdsBefore+maxConn+16, "descriptors bounded by the cap")
	require.Less(t, maxFDs, limit/4)
	require.GreaterOrEqual(t, evicted, float64(total-maxConn), "idle connections made room")
	require.Zero(t, value(m, "meshmetrics_http_connections_refused_total", "", nil), "none refused: every one was idle")
}

// healthz gets /healthz on c, keeping it open.
func healthz(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// procLimit is a process's soft limit of open files.
func procLimit(t *testing.T, pid int) int {
	t.Helper()
	m := map[string]string{}
	b, err := readFile(fmt.Sprintf("/proc/%d/limits", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(b, "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
			m["soft"] = f[0]
		}
	}
	var n int
	_, err = fmt.Sscan(m["soft"], &n)
	require.NoError(t, err)
	return n
}

// TestScrapesNeverReadAt250kSeries: with 250,000 series exposed (the
// default --max-series of a sink), 200 clients ask for /metrics and never
// read. At most --http-max-concurrent-scrapes (4) are written at once,
// each cut off at --http-write-timeout and counted as abandoned; the
// others get 503 at once, counted; /healthz answers meanwhile; and the
// adapter's peak RSS stays within 256 MiB of what the series themselves
// take.
func TestScrapesNeverReadAt250kSeries(t *testing.T) {
	const (
		series  = config.DefaultMaxSeries
		clients = 200
	)
	p := run(t, buildAdapter(t), "--http-write-timeout=3s")
	began := time.Now()
	pid := p.cmd.Process.Pid
	client := metricpb.NewHandleMetricServiceClient(dial(t, p.grpc))
	cfg := anyOf(t, &config.Params{Metrics: []*config.Params_MetricInfo{requestsMetric}, Limits: &config.Limits{MaxSeriesPerMetric: series}})
	const perCall = 50000
	for c := 0; c < series/perCall; c++ {
		ins := make([]*metricpb.InstanceMsg, perCall)
		for i := range ins {
			ins[i] = &metricpb.InstanceMsg{Name: instanceName, Value: mt.Int(1),
				Dimensions: map[string]*policypb.Value{"path": mt.Str(fmt.Sprintf("/service/%08d/reviews.default.svc.cluster.local", c*perCall+i))}}
		}
		_, err := client.HandleMetric(context.Background(), &metricpb.HandleMetricRequest{AdapterConfig: cfg, Instances: ins})
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		return value(p.metrics(t), "meshmetrics_sink_series", "", nil) == series
	}, time.Minute, 100*time.Millisecond)
	loaded := procStatus(t, pid, "VmHWM")
	t.Logf("%d series loaded in %s", series, time.Since(began))

	var wg sync.WaitGroup
	stalled := make([]net.Conn, clients)
	for i := range stalled {
		c, err := net.Dial("tcp", p.http)
		require.NoError(t, err)
		require.NoError(t, c.(*net.TCPConn).SetReadBuffer(4096))
		stalled[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	probe, err := net.Dial("tcp", p.http)
	require.NoError(t, err)
	require.True(t, healthz(probe), "/healthz answers while scrapes stall")
	probe.Close()
	// This test's own scrapes are refused too while the slots are taken.
	own := 0
	require.Eventually(t, func() bool {
		m, ok := tryMetrics(p)
		if !ok {
			own++
			return false
		}
		return value(m, "meshmetrics_scrapes_abandoned_total", "", nil) == float64(config.DefaultHTTPMaxConcurrentScrapes) &&
			value(m, "meshmetrics_scrapes_refused_total", "", nil) == float64(clients-config.DefaultHTTPMaxConcurrentScrapes+own)
	}, time.Minute, 100*time.Millisecond, "the written scrapes are cut off at the write timeout, the others refused")
	peak := procStatus(t, pid, "VmHWM")
	t.Logf("figures %s: %d series; %d stalled scrapes; peak RSS %d MiB with the series loaded, %d MiB after the scrapes",
		t.Name(), series, clients, loaded>>20, peak>>20)
	require.Less(t, peak-loaded, int64(256<<20), "stalled scrapes cost a bounded amount")
}

// TestDebugConfigIsNotServedByDefault: the tenth finding. /debug/config,
// which shows destinations and label names, is served only with
// --debug-config; by default anyone reaching the port gets 404 and none of
// the config.
func TestDebugConfigIsNotServedByDefault(t *testing.T) {
	p := run(t, buildAdapter(t))
	cfg := anyOf(t, &config.Params{Metrics: []*config.Params_MetricInfo{requestsMetric}})
	_, err := metricpb.NewHandleMetricServiceClient(dial(t, p.grpc)).HandleMetric(context.Background(),
		&metricpb.HandleMetricRequest{AdapterConfig: cfg, Instances: instances(1, 1, 0)})
	require.NoError(t, err)
	for _, path := range []string{"/debug/config", "/debug/config/", "/debug/pprof/"} {
		resp, err := http.Get("http://" + p.http + path)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusNotFound, resp.StatusCode, path)
		require.NotContains(t, string(body), requestsMetric.InstanceName, path)
	}
}

// tryMetrics scrapes /metrics, reporting false when the scrape is refused.
func tryMetrics(p *process) (map[string]*dto.MetricFamily, bool) {
	resp, err := http.Get("http://" + p.http + "/metrics")
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, false
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	return mfs, err == nil
}
