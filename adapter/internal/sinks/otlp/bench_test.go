package otlp_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/otlp/otlptest"
	"github.com/meshmetrics/meshmetrics/config"
)

// istioLabels are the dimensions of Istio's standard requestcount
// instance, with typical values: what a data point's attributes look like
// in practice.
var istioLabelNames = []string{"reporter", "source_workload", "source_workload_namespace", "destination_workload",
	"destination_workload_namespace", "destination_service", "request_protocol", "response_code", "connection_security_policy"}

func istioValues(i int) [][]byte {
	vs := []string{"destination", fmt.Sprintf("productpage-v%d", i%3+1), "default", fmt.Sprintf("reviews-v%d", i%7+1),
		"default", fmt.Sprintf("svc-%d.default.svc.cluster.local", i), "http", fmt.Sprint([]int{200, 200, 200, 404, 503}[i%5]), "mutual_tls"}
	out := make([][]byte, len(vs))
	for j, v := range vs {
		out[j] = []byte(v)
	}
	return out
}

func benchSink(b *testing.B, srv *otlptest.Server, protocol string, temporality config.OtlpParams_Temporality) (*env, *otlp.Sink) {
	b.Helper()
	return benchSinkAt(b, srv.Addr(), srv.URL(), protocol, config.OtlpParams_GZIP, temporality)
}

func benchSinkAt(b *testing.B, grpcAddr, url, protocol string, comp config.OtlpParams_Compression, temporality config.OtlpParams_Temporality) (*env, *otlp.Sink) {
	b.Helper()
	e := newEnv("bench-0")
	o := &config.OtlpParams{Protocol: protocol, Endpoint: url, Insecure: true, Interval: time.Hour, Compression: comp,
		Temporality: temporality, QueueSize: 10_000_000, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	if protocol == otlp.ProtocolGRPC {
		o.Endpoint = grpcAddr
	}
	p := params(o)
	s, err := otlp.NewFactory(e.Env).New(p)
	require.NoError(b, err)
	b.Cleanup(func() { _ = s.Close(context.Background()) })
	return e, s.(*otlp.Sink)
}

// BenchmarkConsume is the sink's aggregation: instances folded into their
// series (1000-instance batches over 1000 series of 9 labels).
func BenchmarkConsume(b *testing.B) {
	for _, kind := range []sinks.Kind{sinks.Counter, sinks.Distribution} {
		b.Run(kind.String(), func(b *testing.B) {
			srv := otlptest.New()
			b.Cleanup(srv.Close)
			e, s := benchSink(b, srv, otlp.ProtocolGRPC, config.OtlpParams_CUMULATIVE)
			binding, err := s.Bind(&sinks.Metric{Namespace: "istio", Name: "requests", Kind: kind, LabelNames: istioLabelNames, Buckets: config.DefaultBuckets})
			require.NoError(b, err)
			const series = 1000
			batch := &sinks.Batch{Time: e.clk.Now()}
			for i := 0; i < series; i++ {
				batch.Add(binding, float64(i%250)/100, istioValues(i))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				s.Consume(batch)
			}
			b.ReportMetric(float64(b.N*series)/b.Elapsed().Seconds(), "instances/s")
		})
	}
}

// discard is a receiver that takes every export and answers OK without
// decoding it, so that an export benchmark measures the sink's side: the
// bytes still cross loopback through the real gRPC and HTTP stacks.
type discard struct {
	grpcAddr, url string
	mu            sync.Mutex
	requests      int
	bytes         int
}

func newDiscard(b *testing.B) *discard {
	d := &discard{}
	gs := grpc.NewServer(grpc.ForceServerCodecV2(benchCodec{}), grpc.MaxRecvMsgSize(64<<20),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			var m benchMsg
			if err := stream.RecvMsg(&m); err != nil {
				return err
			}
			d.count(len(m))
			return stream.SendMsg(benchMsg(nil))
		}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	go func() { _ = gs.Serve(l) }()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		d.count(int(n))
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	b.Cleanup(func() { gs.Stop(); hs.Close() })
	d.grpcAddr, d.url = l.Addr().String(), hs.URL+otlp.MetricsPath
	return d
}

func (d *discard) count(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.requests++
	d.bytes += n
}

type benchMsg []byte

type benchCodec struct{}

func (benchCodec) Name() string { return "proto" }

func (benchCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(benchMsg))}, nil
}

func (benchCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*benchMsg) = data.Materialize()
	return nil
}

// BenchmarkExport is one export of every series, the sink's side: data
// points built and encoded, split into requests (2000 points), compressed
// (gzip, the default, or not), sent over loopback through the real gRPC or
// HTTP client to a receiver that discards them, and answered. Per series;
// the instances behind a series do not change what an export costs, so the
// cost per instance is this divided by the instances a series gathers per
// interval.
func BenchmarkExport(b *testing.B) {
	for _, protocol := range []string{otlp.ProtocolGRPC, otlp.ProtocolHTTP} {
		for _, comp := range []config.OtlpParams_Compression{config.OtlpParams_GZIP, config.OtlpParams_NONE} {
			for _, kind := range []sinks.Kind{sinks.Counter, sinks.Distribution} {
				b.Run(fmt.Sprintf("%s/%s/%s/series=%d", protocol, comp, kind, benchSeries), func(b *testing.B) {
					series := benchSeries
					d := newDiscard(b)
					e, s := benchSinkAt(b, d.grpcAddr, d.url, protocol, comp, config.OtlpParams_CUMULATIVE)
					binding, err := s.Bind(&sinks.Metric{Namespace: "istio", Name: "requests", Kind: kind, LabelNames: istioLabelNames, Buckets: config.DefaultBuckets})
					require.NoError(b, err)
					batch := &sinks.Batch{Time: e.clk.Now()}
					for i := 0; i < series; i++ {
						batch.Add(binding, float64(i%250)/100, istioValues(i))
					}
					s.Consume(batch)
					ctx := context.Background()
					b.ReportAllocs()
					b.ResetTimer()
					for b.Loop() {
						e.clk.Advance(time.Second)
						if err := s.Flush(ctx); err != nil {
							b.Fatal(err)
						}
					}
					b.StopTimer()
					d.mu.Lock()
					defer d.mu.Unlock()
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*series), "ns/series")
					// Bytes as the receiver reads them: HTTP bodies as sent
					// (gzipped or not), gRPC messages once gRPC has
					// decompressed them.
					b.ReportMetric(float64(d.bytes)/float64(b.N*series), "B/point")
					b.ReportMetric(float64(d.requests)/float64(b.N), "requests/export")
				})
			}
		}
	}
}

// benchSeries is the series of an export benchmark: enough for 10
// requests of the default 2000 points.
const benchSeries = 20_000
