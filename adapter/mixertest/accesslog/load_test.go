package accesslog_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/accesslog"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
)

// counting counts every entry, HTTP and TCP, by protocol.
const counting = `apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: h, namespace: istio-system}
spec:
  adapter: meshmetrics
  params:
    metrics: [{name: entries, instance_name: entry.instance.istio-system, kind: COUNTER, label_names: [protocol]}]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: entry, namespace: istio-system}
spec:
  template: metric
  params: {value: "1", dimensions: {protocol: context.protocol}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: r, namespace: istio-system}
spec:
  actions: [{handler: h, instances: [entry]}]
`

func counted(t *testing.T, a *mixertest.Adapter) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for k, v := range a.Recorded(t).Series() {
		out[k] = v.Sum
	}
	return out
}

func TestLoadCountsWhatTheAdapterProcessed(t *testing.T) {
	a := mixertest.StartAdapter(t, mixertest.AdapterOptions{ConfigDir: mixertest.ConfigDir(t, nil, crd.Source{Name: "c", Data: []byte(counting)})})
	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()

	// Messages of unequal sizes, HTTP and TCP, from an entries file.
	entries := mixertest.Entries(t, "- {repeat: 3}\n- {protocol: tcp, repeat: 2}\n- {}\n")
	var msgs [][]byte
	var counts []int
	for _, m := range accesslog.Messages(nil, entries, 2) {
		b, err := proto.Marshal(m)
		require.NoError(t, err)
		msgs = append(msgs, b)
		counts = append(counts, len(m.GetHttpLogs().GetLogEntry())+len(m.GetTcpLogs().GetLogEntry()))
	}
	require.Equal(t, []int{2, 1, 2, 1}, counts)
	var progress strings.Builder
	r, err := accesslog.Load(context.Background(), accesslog.LoadOptions{Conn: conn, Messages: msgs, EntryCounts: counts,
		Streams: 3, MaxMessages: 40, MessagesPerStream: 4, Method: accesslog.MethodV2, Progress: &progress})
	require.NoError(t, err)
	require.Equal(t, int64(40), r.Messages)
	require.Equal(t, int64(10), r.Streams, "a new stream every 4 messages")
	require.Zero(t, r.Errors)
	require.Zero(t, r.Unconfirmed)
	require.Empty(t, r.ErrorsByCode)
	got := counted(t, a)
	require.Equal(t, float64(r.Entries), got[mixertest.Key("istio_entries", "http")]+got[mixertest.Key("istio_entries", "tcp")],
		"every entry Load counts was processed when it returned")
	require.Positive(t, got[mixertest.Key("istio_entries", "tcp")])
	require.Positive(t, r.SendLatency.Max)
	require.GreaterOrEqual(t, r.CloseLatency.P99, r.CloseLatency.P50)
	require.Positive(t, r.EntriesPerSecond)
	require.True(t, strings.HasSuffix(progress.String(), "\r\033[K"), "the progress line is cleared at the end")

	// A capped rate over a set duration.
	before := r.Entries
	r, err = accesslog.Load(context.Background(), accesslog.LoadOptions{Conn: conn, Messages: msgs, EntryCounts: counts,
		Streams: 2, Duration: 500 * time.Millisecond, Rate: 40})
	require.NoError(t, err)
	require.InDelta(t, 20, r.Messages, 6, "40 messages/s for half a second")
	require.Equal(t, int64(2), r.Streams, "one stream per worker for the whole run, as Envoy")
	got = counted(t, a)
	require.Equal(t, float64(before+r.Entries), got[mixertest.Key("istio_entries", "http")]+got[mixertest.Key("istio_entries", "tcp")])
}

func TestLoadWithoutServer(t *testing.T) {
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	msgs, err := accesslog.RealisticMessages(1, 2)
	require.NoError(t, err)
	start := time.Now()
	r, err := accesslog.Load(context.Background(), accesslog.LoadOptions{Conn: conn, Messages: msgs, EntriesPerMessage: 2, Streams: 2, MaxMessages: 1000})
	require.ErrorContains(t, err, "Unavailable")
	require.Less(t, time.Since(start), 10*time.Second, "the workers give up when no stream opens")
	require.Zero(t, r.Messages)
	require.Zero(t, r.Streams)
	require.Equal(t, int64(10), r.Errors, "five attempts per worker")
	require.Equal(t, map[string]int64{"Unavailable": 10}, r.ErrorsByCode)

	_, err = accesslog.Load(context.Background(), accesslog.LoadOptions{Conn: conn})
	require.ErrorContains(t, err, "no messages")
	_, err = accesslog.Load(context.Background(), accesslog.LoadOptions{Conn: conn, Messages: msgs, EntryCounts: []int{1, 2}})
	require.ErrorContains(t, err, "one count per message")
	_, err = accesslog.Load(context.Background(), accesslog.LoadOptions{Conn: conn, Messages: msgs, Rate: -1})
	require.ErrorContains(t, err, "rate")
}

func TestProgressLine(t *testing.T) {
	require.Equal(t, "[===============>              ]  50%  50 messages  5000 entries/s",
		accesslog.ProgressLine(accesslog.LoadOptions{MaxMessages: 100, EntriesPerMessage: 100}, time.Second, 50))
	require.Equal(t, "[=======>                      ]  25%  10 messages  15 entries/s",
		accesslog.ProgressLine(accesslog.LoadOptions{Duration: 4 * time.Second, EntryCounts: []int{1, 2}}, time.Second, 10))
}
