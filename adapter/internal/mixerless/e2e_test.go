package mixerless_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals"
	"github.com/meshmetrics/meshmetrics/adapter/internal/promtest"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/exposition"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/accesslog"
)

func startAdapter(t testing.TB, dir string, als adapter.ALSOptions) *adapter.Adapter {
	t.Helper()
	a, err := adapter.New(adapter.Options{
		GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "e2e-replica",
		Log: quietLogger(), ShutdownTimeout: 10 * time.Second, Tick: 50 * time.Millisecond,
		ConfigDir: dir, ConfigReloadInterval: 50 * time.Millisecond, ALS: als, QueueCapacity: 1 << 20,
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
	return a
}

func scrape(t testing.TB, a *adapter.Adapter) string {
	t.Helper()
	resp, err := http.Get("http://" + a.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// traffic is what the tests send: per stream method, HTTP and TCP messages.
// The expected series are computed entry by entry from the entries
// themselves, below.
type traffic struct {
	http []*alsdata.HTTPAccessLogEntry
	tcp  []*alsdata.TCPAccessLogEntry
}

func makeTraffic(round int) traffic {
	var tr traffic
	paths := []string{"/v1/damage?analytic=1", "/v1/damage", "/v1/damage?analytic=yes", "/health", "/v1/damage?analytic="}
	codes := []uint32{200, 200, 503, 404, 200}
	services := []string{"reviews.default.svc.cluster.local", "ratings.bookinfo.svc.cluster.local"}
	for i := 0; i < 10+round; i++ {
		var flags *alsdata.ResponseFlags
		if codes[i%5] == 503 {
			flags = &alsdata.ResponseFlags{UpstreamOverflow: true}
		}
		method := corev3.RequestMethod_GET
		if i%3 == 0 {
			method = corev3.RequestMethod_POST
		}
		tr.http = append(tr.http, httpEntry(services[i%2], paths[i%5], codes[i%5], method, flags))
	}
	for i := 0; i < 3; i++ {
		tr.tcp = append(tr.tcp, tcpEntry("mysql.db.svc.cluster.local", uint64(100*(i+1)), uint64(7*(i+1))))
	}
	return tr
}

// expected computes the series the config must produce from the entries:
// the requests_total, tcp byte and analytic series, by their exposition
// line without the value.
func (tr traffic) expected(into map[string]float64) {
	for _, e := range tr.http {
		svc := strings.TrimPrefix(e.CommonProperties.UpstreamCluster, "inbound|9080|http|")
		name, ns, _ := strings.Cut(svc, ".")
		ns, _, _ = strings.Cut(ns, ".")
		code := strconv.Itoa(int(e.Response.ResponseCode.Value))
		flags := "-"
		if e.CommonProperties.ResponseFlags != nil {
			flags = "UO"
		}
		into[series("istio_requests_total", "reporter", "destination", "source_workload", "unknown", "destination_service", svc,
			"destination_service_name", name, "destination_service_namespace", ns, "request_protocol", "http", "response_code", code,
			"response_flags", flags)]++
		if strings.HasPrefix(e.Request.Path, "/v1/damage?analytic=") {
			into[series("istio_analytic_requests", "request_path", e.Request.Path, "request_method", e.Request.RequestMethod.String(),
				"response_code", code, "destination_service", name, "source_workload", "unknown")]++
		}
	}
	for _, e := range tr.tcp {
		svc := strings.TrimPrefix(e.CommonProperties.UpstreamCluster, "outbound|3306||")
		into[series("istio_tcp_sent_bytes_total", "destination_service", svc, "source_workload", "unknown")] += float64(e.ConnectionProperties.SentBytes)
		into[series("istio_tcp_received_bytes_total", "destination_service", svc, "source_workload", "unknown")] += float64(e.ConnectionProperties.ReceivedBytes)
	}
}

// series is a series as the exposition writes it: labels sorted by name.
func series(name string, kv ...string) string {
	var pairs []string
	for i := 0; i < len(kv); i += 2 {
		pairs = append(pairs, fmt.Sprintf("%s=%q", kv[i], kv[i+1]))
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// send streams tr on method: HTTP entries in messages of 4, then the TCP
// entries in one message.
func send(t testing.TB, addr, method string, tr traffic) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, finish := alsStream(t, ctx, addr, method)
	sendMsg := func(m *alsv3.StreamAccessLogsMessage) {
		if method == envoyals.MethodV2 {
			v2, err := accesslog.V2(m)
			require.NoError(t, err)
			require.Equal(t, len(m.GetHttpLogs().GetLogEntry()), len(v2.GetHttpLogs().GetLogEntry()))
			require.Equal(t, len(m.GetTcpLogs().GetLogEntry()), len(v2.GetTcpLogs().GetLogEntry()))
			require.NoError(t, st.SendMsg(v2))
			return
		}
		require.NoError(t, st.SendMsg(m))
	}
	for i := 0; i < len(tr.http); i += 4 {
		sendMsg(httpMessage(i == 0, tr.http[i:min(i+4, len(tr.http))]...))
	}
	sendMsg(tcpMessage(tr.tcp...))
	require.NoError(t, finish())
}

func exposed(text string, prefixes ...string) map[string]float64 {
	out := map[string]float64{}
	for _, l := range strings.Split(text, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p+"{") {
				i := strings.LastIndexByte(l, ' ')
				v, _ := strconv.ParseFloat(l[i+1:], 64)
				out[l[:i]] = v
			}
		}
	}
	return out
}

var seriesNames = []string{"istio_requests_total", "istio_analytic_requests", "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"}

// TestAccessLogsThroughTheServer streams v3 and v2, HTTP and TCP entries
// through the real gRPC server and checks every series on /metrics, and the
// adapter's own counters, against what the entries must give.
func TestAccessLogsThroughTheServer(t *testing.T) {
	a := startAdapter(t, configDir(t, handlers("")), adapter.ALSOptions{})
	want := map[string]float64{}
	v3, v2 := makeTraffic(0), makeTraffic(3)
	send(t, a.GRPCAddr(), envoyals.MethodV3, v3)
	send(t, a.GRPCAddr(), envoyals.MethodV2, v2)
	v3.expected(want)
	v2.expected(want)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, a.Flush(ctx))
	text := scrape(t, a)
	require.Equal(t, want, exposed(text, seriesNames...))
	require.Contains(t, text, fmt.Sprintf(`meshmetrics_accesslog_entries_received_total{api="v3",protocol="http"} %d`, len(v3.http)))
	require.Contains(t, text, fmt.Sprintf(`meshmetrics_accesslog_entries_received_total{api="v2",protocol="http"} %d`, len(v2.http)))
	require.Contains(t, text, `meshmetrics_accesslog_entries_received_total{api="v2",protocol="tcp"} 3`)
	require.Contains(t, text, `meshmetrics_accesslog_entries_received_total{api="v3",protocol="tcp"} 3`)
	require.Contains(t, text, fmt.Sprintf(`meshmetrics_accesslog_bags_built_total %d`, len(v3.http)+len(v2.http)+6))
	analytic := 0.0
	for k, v := range want {
		if strings.HasPrefix(k, "istio_analytic_requests") {
			analytic += v
		}
	}
	require.Contains(t, text, fmt.Sprintf(`meshmetrics_accesslog_instances_dispatched_total{handler="analyticprom.handler.istio-system"} %g`, analytic))
	require.Contains(t, text, fmt.Sprintf(`meshmetrics_accesslog_instances_dispatched_total{handler="prometheus.handler.istio-system"} %d`, len(v3.http)+len(v2.http)+12))
	require.Contains(t, text, `meshmetrics_accesslog_skipped_total{reason="match_error"} 6`, "the analytic rule's request.path fails on each TCP entry")
	require.Contains(t, text, "\nmeshmetrics_config_last_reload_successful 1\n")
}

// TestEndToEndWithRealPrometheus checks, entry by entry, the series a real
// Prometheus scrapes from /metrics and receives by remote write.
func TestEndToEndWithRealPrometheus(t *testing.T) {
	promAddr := promtest.FreeAddr(t)
	dir := configDir(t, handlers("http://"+promAddr+"/api/v1/write"))
	a := startAdapter(t, dir, adapter.ALSOptions{})
	prom := promtest.Start(t, promAddr, a.HTTPAddr())

	want := map[string]float64{}
	for round, method := range []string{envoyals.MethodV3, envoyals.MethodV2, envoyals.MethodV3} {
		tr := makeTraffic(round)
		send(t, a.GRPCAddr(), method, tr)
		tr.expected(want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, a.Flush(ctx))
	require.Equal(t, want, exposed(scrape(t, a), seriesNames...))

	// Every series, scraped (job="meshmetrics") and remote-written
	// (replica="e2e-replica", the requests_total handler only), with its
	// exact value.
	for line, v := range want {
		name, labels, _ := strings.Cut(line, "{")
		sel := name + `{job="meshmetrics",` + labels
		prom.WaitValue(t, sel, v)
		if name != "istio_analytic_requests" {
			prom.WaitValue(t, name+`{replica="e2e-replica",`+labels, v)
		}
	}
	for _, name := range seriesNames {
		n := 0
		for line := range want {
			if strings.HasPrefix(line, name+"{") {
				n++
			}
		}
		got := prom.Query(t, name+`{job="meshmetrics"}`)
		require.Len(t, got, n, name)
	}
}
