package faults_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/accesslog"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/tlstest"
	"github.com/meshmetrics/meshmetrics/config"
)

// bigRequest is a valid HandleMetric request of about size bytes: one
// instance of the exposition's counter, and a dedup_id that makes up the
// rest (the form of the issue's attack, which also sent huge ids).
func bigRequest(t *testing.T, size int) []byte {
	t.Helper()
	req := &metricpb.HandleMetricRequest{
		AdapterConfig: anyOf(t, &config.Params{Metrics: []*config.Params_MetricInfo{requestsMetric}}),
		Instances:     instances(1, 1, 0),
		DedupId:       strings.Repeat("d", size),
	}
	b, err := req.Marshal()
	require.NoError(t, err)
	return b
}

// TestMemoryBeforeAuthentication is the issue's first attack, against the
// adapter binary: 50 concurrent HandleMetric calls of 60 MB each. With TLS
// and --auth-token-file and a wrong token, every call is refused
// (Unauthenticated) before its body is read: the adapter's peak RSS grows
// by less than 64 MiB (it grew by 3.6 GB when the token was checked after
// gRPC had read each message). With no authentication (the default),
// calls are admitted while the largest message fits in the bytes in flight
// (--grpc-max-bytes-in-flight, 256 MiB by default): each is answered OK or
// refused with ResourceExhausted after waiting 5 s for room, every refusal
// is counted, and the peak RSS stays below 700 MiB (the budget, the copy a
// message read in place needs when it came in many frames, and the
// collector's headroom; measured about 500 MiB).
func TestMemoryBeforeAuthentication(t *testing.T) {
	const (
		calls = 50
		size  = 60 << 20
	)
	bin := buildAdapter(t)
	msg := bigRequest(t, size)

	t.Run("wrong token over TLS", func(t *testing.T) {
		ca := tlstest.NewCA(t, "mesh")
		leaf := ca.Issue(t, "adapter", tlstest.LeafOptions{CommonName: "meshmetrics", DNSNames: []string{"localhost"}, Server: true})
		tokenFile := filepath.Join(t.TempDir(), "token")
		require.NoError(t, os.WriteFile(tokenFile, []byte("the-right-token-5f2a"), 0o600))
		p := run(t, bin, "--tls-cert="+leaf.CertFile, "--tls-key="+leaf.KeyFile, "--auth-token-file="+tokenFile)
		pid := p.cmd.Process.Pid
		before := procStatus(t, pid, "VmHWM")
		c := newRawClient(p.grpc, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
		defer c.close()
		got := attack(t, c, calls, map[string]string{"authorization": "Bearer a-wrong-token"}, msg)
		require.Equal(t, map[codes.Code]int{codes.Unauthenticated: calls}, got)
		peak := procStatus(t, pid, "VmHWM")
		m := p.metrics(t)
		require.Equal(t, float64(calls), value(m, "meshmetrics_auth_refused_total", "", map[string]string{"reason": "wrong_token"}))
		require.Zero(t, value(m, "meshmetrics_instances_received_total", "", nil), "no call was read")
		t.Logf("figures %s: %d calls of %d MiB with a wrong token, all refused; peak RSS %d MiB before, %d MiB after",
			t.Name(), calls, size>>20, before>>20, peak>>20)
		require.Less(t, peak-before, int64(64<<20), "refused callers cannot make the adapter hold their messages")
	})

	t.Run("no authentication", func(t *testing.T) {
		p := run(t, bin)
		pid := p.cmd.Process.Pid
		before := procStatus(t, pid, "VmHWM")
		c := newRawClient(p.grpc, nil)
		defer c.close()
		got := attack(t, c, calls, nil, msg)
		peak := procStatus(t, pid, "VmHWM")
		m := p.metrics(t)
		require.Equal(t, calls, got[codes.OK]+got[codes.ResourceExhausted], "answered OK or refused for room: %v", got)
		require.Positive(t, got[codes.OK])
		require.Equal(t, float64(got[codes.ResourceExhausted]), value(m, "meshmetrics_grpc_refused_total", "", map[string]string{"reason": "bytes_in_flight"}),
			"every refusal counted")
		require.Equal(t, float64(got[codes.OK]), value(m, "meshmetrics_instances_accepted_total", "", nil), "one instance per call answered OK")
		require.Equal(t, float64(got[codes.OK]), value(m, "meshmetrics_handle_metric_requests_total", "", map[string]string{"code": "OK"}))
		require.Zero(t, value(m, "meshmetrics_grpc_bytes_in_flight", "", nil), "every reservation given back")
		t.Logf("figures %s: %d calls of %d MiB, %d answered OK, %d refused for room; peak RSS %d MiB before, %d MiB after",
			t.Name(), calls, size>>20, got[codes.OK], got[codes.ResourceExhausted], before>>20, peak>>20)
		require.Less(t, peak, int64(700<<20), "the bytes in flight bound what callers can make the adapter hold")
	})
}

// attack sends calls concurrent HandleMetric calls of msg with md and
// returns their status codes.
func attack(t *testing.T, c *rawClient, calls int, md map[string]string, msg []byte) map[codes.Code]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var mu sync.Mutex
	got := map[codes.Code]int{}
	var wg sync.WaitGroup
	for range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, text, err := c.call(ctx, mixer.HandleMetricMethod, md, msg)
			if err != nil {
				t.Errorf("call: %v", err)
				return
			}
			if code != codes.OK && code != codes.Unauthenticated && code != codes.ResourceExhausted {
				t.Errorf("call: %s: %s", code, text)
			}
			mu.Lock()
			got[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return got
}

// TestAccessLogStreamsAreBoundedBeforeTrust: the same bounds for Envoy's
// access-log streams (the Mixer-less mode), which live as long as Envoy
// does. Past --als-max-streams, a new stream is refused before it is read
// (ResourceExhausted, counted); a message larger than --max-recv-msg-size
// ends its stream before its body is read; the streams still open keep
// working, and a 60 MB message on each of them leaves the peak RSS within
// 64 MiB of where it was.
func TestAccessLogStreamsAreBoundedBeforeTrust(t *testing.T) {
	const (
		maxStreams = 8
		extra      = 12
	)
	bin := buildAdapter(t)
	p := run(t, bin, "--config-dir="+t.TempDir(), "--als-max-streams=8", "--max-recv-msg-size=4194304")
	pid := p.cmd.Process.Pid
	c := newRawClient(p.grpc, nil)
	defer c.close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	msg, err := proto.Marshal(accesslog.HTTPMessage(&alsv3.StreamAccessLogsMessage_Identifier{LogName: "als"}, accesslog.RealisticHTTPEntry(1)))
	require.NoError(t, err)

	var open []*rawStream
	for range maxStreams {
		s := c.stream(ctx, envoyals.MethodV3, nil)
		require.NoError(t, s.send(msg))
		open = append(open, s)
	}
	require.Eventually(t, func() bool { return value(p.metrics(t), "meshmetrics_grpc_open_streams", "", nil) == maxStreams },
		10*time.Second, 10*time.Millisecond)
	for range extra {
		res := c.stream(ctx, envoyals.MethodV3, nil).end()
		require.NoError(t, res.err)
		require.Equal(t, codes.ResourceExhausted, res.code, res.msg)
	}
	require.Equal(t, float64(extra), value(p.metrics(t), "meshmetrics_grpc_refused_total", "", map[string]string{"reason": "too_many_streams"}))

	// Half the open streams send a message far above the limit: gRPC
	// refuses it from its length, before its body.
	before := procStatus(t, pid, "VmHWM")
	huge := make([]byte, 60<<20)
	for _, s := range open[:maxStreams/2] {
		_ = s.send(huge) // fails once the server has ended the stream
		res := s.end()
		require.NoError(t, res.err)
		require.Equal(t, codes.ResourceExhausted, res.code, res.msg)
	}
	peak := procStatus(t, pid, "VmHWM")
	// The others still work, and end cleanly.
	for _, s := range open[maxStreams/2:] {
		require.NoError(t, s.send(msg))
		res := s.end()
		require.NoError(t, res.err)
		require.Equal(t, codes.OK, res.code, res.msg)
	}
	require.Eventually(t, func() bool { return value(p.metrics(t), "meshmetrics_grpc_open_streams", "", nil) == 0 },
		10*time.Second, 10*time.Millisecond, "every stream's slot given back")
	require.Zero(t, value(p.metrics(t), "meshmetrics_grpc_bytes_in_flight", "", nil))
	t.Logf("figures %s: %d streams open, %d refused, %d ended by a 60 MiB message; peak RSS %d MiB before, %d MiB after",
		t.Name(), maxStreams, extra, maxStreams/2, before>>20, peak>>20)
	require.Less(t, peak-before, int64(64<<20))
}
