package mixerless_test

import (
	"context"
	"io"
	goruntime "runtime"
	"syscall"
	"testing"
	"time"

	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/logentry"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/mixerless"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/exposition"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/accesslog"
)

// BenchmarkEntries runs messages of 100 realistic entries through the rules
// runtime with Istio's standard requestcount rule and the analytic sample's
// rule (two rules, two handlers) into the Prometheus exposition: read in
// place, bags, rule matches, instances, handler, batches, sink. ns/entry is
// the wall time per entry on the calling goroutine; cpu-ns/entry is the
// process's CPU time per entry, the sinks' consumer goroutine (which applies
// the batches, flushed before the timer stops) and the GC included: the
// adapter's CPU per entry past gRPC. allocs/op is per message.
func BenchmarkEntries(b *testing.B) {
	log := quietLogger()
	reg := prometheus.NewRegistry()
	set := sinks.NewSet(1<<24, 10*time.Second)
	defer set.Close(context.Background())
	tm := telemetry.New(reg, func() int { return 0 }, set)
	env := sinks.Env{Log: log, Limiter: logging.NewLimiter(log, time.Minute), Secrets: &logging.Secrets{}, Metrics: tm, Replica: "bench",
		MaxSeries: 100000, Now: time.Now, Tick: time.Second}
	expo := exposition.New(env)
	set.AddPermanent(exposition.Key, expo)
	cache := handler.NewCache(handler.Deps{Sinks: set, Factories: []sinks.Factory{exposition.NewFactory(expo)}},
		handler.CacheOptions{Size: 8, IdleTimeout: time.Hour})
	rt, err := mixerless.NewRuntime(mixerless.RuntimeOptions{ConfigDir: configDir(b, handlers("")), Config: mixerless.Options{Validate: cache.Validate},
		Cache: cache, Telemetry: tm, Metrics: mixerless.NewMetrics(reg), Log: log, Limiter: env.Limiter})
	require.NoError(b, err)
	defer rt.Close(context.Background())
	msgs, err := accesslog.RealisticMessages(16, 100)
	require.NoError(b, err)
	parsed := make([]logentry.Message, len(msgs))
	for i := range msgs {
		require.NoError(b, parsed[i].Parse(msgs[i]))
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		m := &parsed[i%len(parsed)]
		require.NoError(b, m.Parse(msgs[i%len(msgs)]))
		rt.Entries(m, logentry.APIv3)
	}
	require.NoError(b, set.Flush(context.Background()))
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/entry")
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N*100), "cpu-ns/entry")
	require.NoError(b, expo.WriteText(io.Discard))
}

// processCPU is the CPU time of the whole process (every thread: the sinks'
// consumer and the GC included), in nanoseconds. Unlike wall time, it does
// not count the time other processes of a shared machine take.
func processCPU() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkThroughGRPC streams messages of 100 realistic entries over
// loopback gRPC (one stream, pre-encoded bytes) into an adapter with the
// same two rules: the whole adapter path, from the socket to the sink, with
// the load client in the same process. ns/entry is wall time per entry.
func BenchmarkThroughGRPC(b *testing.B) {
	a := startAdapter(b, configDir(b, handlers("")), adapter.ALSOptions{})
	msgs, err := accesslog.RealisticMessages(64, 100)
	require.NoError(b, err)
	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(b, err)
	defer conn.Close()
	ctx := context.Background()
	st, err := accesslog.Open(ctx, conn, accesslog.MethodV3)
	require.NoError(b, err)
	for i := 0; i < 100; i++ { // warm up
		require.NoError(b, st.SendRaw(msgs[i%len(msgs)]))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		require.NoError(b, st.SendRaw(msgs[i%len(msgs)]))
	}
	require.NoError(b, st.Close())
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/entry")
}

// TestNoAllocationPerEntry: entries whose rule matches fail (TCP entries
// against a request.path rule) or whose instances cannot be built allocate
// nothing either, once warm: such failures are counted, and described only
// at debug level.
func TestNoAllocationPerEntry(t *testing.T) {
	log := quietLogger()
	reg := prometheus.NewRegistry()
	set := sinks.NewSet(1<<24, 10*time.Second)
	defer func() { _ = set.Close(context.Background()) }()
	tm := telemetry.New(reg, func() int { return 0 }, set)
	env := sinks.Env{Log: log, Limiter: logging.NewLimiter(log, time.Minute), Secrets: &logging.Secrets{}, Metrics: tm, Replica: "t",
		MaxSeries: 100000, Now: time.Now, Tick: time.Second}
	expo := exposition.New(env)
	set.AddPermanent(exposition.Key, expo)
	cache := handler.NewCache(handler.Deps{Sinks: set, Factories: []sinks.Factory{exposition.NewFactory(expo)}},
		handler.CacheOptions{Size: 8, IdleTimeout: time.Hour})
	rt, err := mixerless.NewRuntime(mixerless.RuntimeOptions{ConfigDir: configDir(t, handlers("")), Config: mixerless.Options{Validate: cache.Validate},
		Cache: cache, Telemetry: tm, Metrics: mixerless.NewMetrics(reg), Log: log, Limiter: env.Limiter})
	require.NoError(t, err)
	defer func() { _ = rt.Close(context.Background()) }()
	tr := makeTraffic(0)
	var entries []*alsdata.TCPAccessLogEntry
	for i := 0; i < 50; i++ {
		entries = append(entries, tr.tcp[i%len(tr.tcp)])
	}
	for name, m := range map[string]*alsv3.StreamAccessLogsMessage{"tcp": tcpMessage(entries...), "http": httpMessage(false, tr.http...)} {
		raw, err := proto.Marshal(m)
		require.NoError(t, err)
		var msg logentry.Message
		run := func() {
			require.NoError(t, msg.Parse(raw))
			rt.Entries(&msg, logentry.APIv3)
		}
		// Each run starts with the sink queues drained, as in service when
		// the sinks keep up, so that batches come back to their pool: a
		// burst that outruns the sinks grows new batches (the handler
		// pipeline's behaviour, the same for HandleMetric).
		drained := func() {
			require.Eventually(t, func() bool {
				for _, q := range set.Stats() {
					if q.Depth > 0 {
						return false
					}
				}
				return true
			}, 5*time.Second, time.Millisecond)
		}
		for i := 0; i < 20; i++ {
			run()
			drained()
		}
		var mallocs uint64
		const runs = 50
		for i := 0; i < runs; i++ {
			drained()
			var before, after goruntime.MemStats
			goruntime.ReadMemStats(&before)
			run()
			goruntime.ReadMemStats(&after)
			mallocs += after.Mallocs - before.Mallocs
		}
		perEntry := float64(mallocs) / runs / float64(msg.Len())
		limit := 0.05
		if raceEnabled {
			limit = 2 // pools drop objects at random; a per-entry allocation still shows (it was 7)
		}
		require.LessOrEqual(t, perEntry, limit, "%s: %.2f allocations per message of %d entries", name, float64(mallocs)/runs, msg.Len())
	}
}
