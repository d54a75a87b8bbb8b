package adapter_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/tlstest"
	"github.com/meshmetrics/meshmetrics/config"
)

// counter reads one of the adapter's own metrics from its registry.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			require.Len(t, mf.GetMetric(), 1)
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestHTTPConnectionsAreCapped holds every connection slot with idle
// keep-alive connections: the next connection makes room by closing the one
// idle longest (counted as evicted) and is served. (When every slot is
// serving a request, a new connection is refused.)
func TestHTTPConnectionsAreCapped(t *testing.T) {
	h := start(t, func(o *adapter.Options) { o.HTTPMaxConnections = 5 })
	var held []net.Conn
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", h.a.HTTPAddr())
		require.NoError(t, err)
		held = append(held, c)
		require.True(t, healthzOn(c), "served, then idle: a keep-alive connection")
	}
	healthz := func() bool {
		c, err := net.Dial("tcp", h.a.HTTPAddr())
		if err != nil {
			return false
		}
		defer c.Close()
		return healthzOn(c)
	}
	require.True(t, healthz(), "a new connection is served: an idle one made room")
	require.Eventually(t, func() bool {
		return counter(t, h.a.Registry(), "meshmetrics_http_connections_evicted_total") == 1
	}, 5*time.Second, 10*time.Millisecond)
	// The one idle longest: normally the first, but the server marks a
	// connection idle on its own goroutine, which a loaded machine can
	// delay past the next connection's request.
	closed := 0
	for _, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, io.EOF) {
			closed++
		}
	}
	require.Equal(t, 1, closed, "one idle connection was closed to make room")
	require.Zero(t, counter(t, h.a.Registry(), "meshmetrics_http_connections_refused_total"))
	for _, c := range held {
		c.Close()
	}

	// Every slot serving a request (two scrapes being written to clients
	// that do not read): nothing to evict, a new connection is closed at
	// once and counted; once the scrapes are cut off, /healthz works.
	log := logrus.New()
	log.SetOutput(io.Discard)
	a, err := adapter.New(adapter.Options{GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "r", Log: log,
		HTTPMaxConnections: 2, HTTPMaxConcurrentScrapes: 2, HTTPWriteTimeout: 3 * time.Second})
	require.NoError(t, err)
	require.NoError(t, a.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	bigSeries(t, a)
	stallScrape(t, a)
	stallScrape(t, a)
	extra, err := net.Dial("tcp", a.HTTPAddr())
	require.NoError(t, err)
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = extra.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "closed at once")
	require.Eventually(t, func() bool {
		return counter(t, a.Registry(), "meshmetrics_http_connections_refused_total") == 1
	}, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", a.HTTPAddr())
		if err != nil {
			return false
		}
		defer c.Close()
		return healthzOn(c)
	}, 10*time.Second, 50*time.Millisecond, "served again once the scrapes are cut off")
}

// bigSeries gives a's exposition 20,000 series with long label values:
// about 8 MB of text, more than loopback socket buffers hold.
func bigSeries(t *testing.T, a *adapter.Adapter) {
	t.Helper()
	h := &harness{a: a}
	h.conn = dialGRPC(t, a.GRPCAddr())
	p := &config.Params{Metrics: []*config.Params_MetricInfo{{InstanceName: "big", Kind: config.Params_MetricInfo_COUNTER, Name: "big",
		LabelNames: []string{"id"}}}}
	req := &metricpb.HandleMetricRequest{AdapterConfig: cfg(t, p)}
	for i := 0; i < 20000; i++ {
		req.Instances = append(req.Instances, mt.Instance("big", mt.Int(1), "id", mt.Str(fmt.Sprintf("series-%07d-%s", i, strings.Repeat("x", 400)))))
	}
	require.NoError(t, h.send(t, req))
	require.NoError(t, a.Flush(context.Background()))
}

// stallScrape asks for /metrics and does not read it: once its status line
// arrives, the scrape is being written and holds its connection and a
// scrape slot until the write timeout.
func stallScrape(t *testing.T, a *adapter.Adapter) {
	t.Helper()
	stalled, err := net.Dial("tcp", a.HTTPAddr())
	require.NoError(t, err)
	t.Cleanup(func() { stalled.Close() })
	require.NoError(t, stalled.(*net.TCPConn).SetReadBuffer(4096))
	fmt.Fprintf(stalled, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	line, err := bufio.NewReader(io.LimitReader(stalled, 64)).ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(line, "HTTP/1.1 200"), line)
}

// healthzOn asks for /healthz on c and reports whether it got a 200.
func healthzOn(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "HTTP/1.1 200")
}

// TestScrapesThatAreNotReadAreAbandonedAndCapped: a client asks for a large
// /metrics and never reads it. It holds the only scrape slot until the write
// timeout, so another scrape meanwhile gets 503; then the scrape is
// abandoned and counted, and scrapes work again.
func TestScrapesThatAreNotReadAreAbandonedAndCapped(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	a, err := adapter.New(adapter.Options{GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "r", Log: log,
		HTTPMaxConcurrentScrapes: 1, HTTPWriteTimeout: 3 * time.Second, MaxSeries: 200000})
	require.NoError(t, err)
	require.NoError(t, a.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
	})
	bigSeries(t, a)
	// From then on it holds the only slot, until the write timeout cuts it
	// off.
	stallScrape(t, a)

	require.Equal(t, http.StatusServiceUnavailable, tryStatus("http://"+a.HTTPAddr()+"/metrics"), "the only scrape slot is taken")
	require.Equal(t, 1.0, counter(t, a.Registry(), "meshmetrics_scrapes_refused_total"))
	require.Eventually(t, func() bool {
		return counter(t, a.Registry(), "meshmetrics_scrapes_abandoned_total") == 1
	}, 10*time.Second, 50*time.Millisecond, "cut off at the write timeout")
	require.Equal(t, http.StatusOK, getStatusURL(t, "http://"+a.HTTPAddr()+"/metrics"))
}

// TestWebConfigServesTLSAndBasicAuth: with an exporter-toolkit web config the
// HTTP port speaks TLS and wants the configured user.
func TestWebConfigServesTLSAndBasicAuth(t *testing.T) {
	ca := tlstest.NewCA(t, "web-ca")
	leaf := ca.Issue(t, "web", tlstest.LeafOptions{CommonName: "meshmetrics", IPs: []net.IP{net.ParseIP("127.0.0.1")}, Server: true})
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret-pass"), bcrypt.MinCost)
	require.NoError(t, err)
	webConfig := filepath.Join(t.TempDir(), "web.yaml")
	require.NoError(t, os.WriteFile(webConfig, []byte(fmt.Sprintf(`tls_server_config:
  cert_file: %s
  key_file: %s
basic_auth_users:
  prometheus: %s
`, leaf.CertFile, leaf.KeyFile, hash)), 0o600))
	h := start(t, func(o *adapter.Options) { o.WebConfigFile = webConfig })

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	get := func(user, pass string) int {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "https://"+h.a.HTTPAddr()+"/metrics", nil)
		require.NoError(t, err)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusUnauthorized, get("", ""))
	require.Equal(t, http.StatusUnauthorized, get("prometheus", "wrong"))
	require.Equal(t, http.StatusOK, get("prometheus", "s3cret-pass"))

	resp, err := http.Get("http://" + h.a.HTTPAddr() + "/metrics")
	if err == nil {
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "plain HTTP is refused on a TLS port")
	}
}

func TestBrokenWebConfigStopsTheStart(t *testing.T) {
	webConfig := filepath.Join(t.TempDir(), "web.yaml")
	require.NoError(t, os.WriteFile(webConfig, []byte("tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n"), 0o600))
	a, err := adapter.New(adapter.Options{GRPCAddress: "127.0.0.1:0", HTTPAddress: "127.0.0.1:0", Replica: "r", WebConfigFile: webConfig})
	require.NoError(t, err)
	require.ErrorContains(t, a.Start(), "--web.config.file")
}

func TestDebugConfigIsOffByDefault(t *testing.T) {
	h := start(t, nil)
	require.Equal(t, http.StatusNotFound, getStatus(t, h, "/debug/config"))
	h = start(t, func(o *adapter.Options) { o.DebugConfig = true })
	require.Equal(t, http.StatusOK, getStatus(t, h, "/debug/config"))
}

// tryStatus is the status of a GET, or 0 when it fails.
func tryStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func getStatusURL(t *testing.T, url string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(mixerpb.Codec{}), grpc.MaxCallSendMsgSize(64<<20)))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}
