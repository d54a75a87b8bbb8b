package mixerless_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/attrmap"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/logentry"
	"github.com/meshmetrics/meshmetrics/adapter/internal/mixerless"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/modelpb"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/dispatch"
	"github.com/meshmetrics/meshmetrics/adapter/rules/encode"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

// recorder is a second out-of-process adapter that keeps every
// HandleMetric request's bytes. When block is set it never answers.
type recorder struct {
	mu    sync.Mutex
	calls [][]byte
	block chan struct{}
	addr  string
}

type rawRequest struct{ b []byte }

func (r *rawRequest) Unmarshal(b []byte) error {
	r.b = append([]byte(nil), b...)
	return nil
}

func startRecorder(t *testing.T, block bool) *recorder {
	t.Helper()
	rec := &recorder{}
	if block {
		rec.block = make(chan struct{})
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.ForceServerCodecV2(mixerpb.Codec{}), grpc.UnknownServiceHandler(func(_ any, st grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(st)
		if method != encode.Path {
			return fmt.Errorf("unexpected method %s", method)
		}
		var req rawRequest
		if err := st.RecvMsg(&req); err != nil {
			return err
		}
		if rec.block != nil {
			select {
			case <-rec.block:
			case <-st.Context().Done():
				return st.Context().Err()
			}
		}
		rec.mu.Lock()
		rec.calls = append(rec.calls, req.b)
		rec.mu.Unlock()
		return st.SendMsg(&modelpb.ReportResult{})
	}))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		if rec.block != nil {
			close(rec.block)
		}
		srv.Stop()
	})
	rec.addr = lis.Addr().String()
	return rec
}

func (r *recorder) received() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.calls...)
}

// forwardConfig adds, next to the standard config, an adapter CR for
// another out-of-process adapter (no params) with a handler at addr, and a
// rule sending it requestcount and an instance that cannot be built for TCP
// entries (request.path without a default).
func forwardConfig(addr string) string {
	return handlers("") + fmt.Sprintf(`---
apiVersion: config.istio.io/v1alpha2
kind: adapter
metadata: {name: recorder, namespace: istio-system}
spec: {description: another out-of-process adapter, session_based: false, templates: [metric]}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: recorder, namespace: istio-system}
spec:
  adapter: recorder
  connection: {address: %q, timeout: 5s}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: pathonly, namespace: istio-system}
spec:
  template: metric
  params:
    value: request.size | 0
    dimensions: {path: request.path, code: response.code | 0, started: request.time | timestamp("2020-01-01T00:00:00Z")}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: forward, namespace: istio-system}
spec:
  actions: [{handler: recorder, instances: [requestcount, pathonly]}]
`, addr)
}

// TestForwardsMixerExactCalls points a handler at a second adapter process
// and checks that it gets, for each message, one HandleMetric call whose
// bytes are what rules/dispatch and rules/encode make of the same bags:
// Mixer's rule order and instance building (the interpreter, not the typed
// path), Mixer's encoding, a dedup_id of its own per call.
func TestForwardsMixerExactCalls(t *testing.T) {
	rec := startRecorder(t, false)
	dir := configDir(t, forwardConfig(rec.addr))
	for _, exact := range []bool{true, false} {
		t.Run(fmt.Sprintf("mixer-exact=%v", exact), func(t *testing.T) {
			before := len(rec.received())
			als := adapter.ALSOptions{MixerExact: exact}
			a := startAdapter(t, dir, als)
			var msgs []*alsv3.StreamAccessLogsMessage
			tr := makeTraffic(1)
			for i := 0; i < len(tr.http); i += 5 {
				msgs = append(msgs, httpMessage(i == 0, tr.http[i:min(i+5, len(tr.http))]...))
			}
			msgs = append(msgs, tcpMessage(tr.tcp...))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			st, finish := alsStream(t, ctx, a.GRPCAddr(), envoyals.MethodV3)
			for _, m := range msgs {
				require.NoError(t, st.SendMsg(m))
			}
			require.NoError(t, finish())
			require.Eventually(t, func() bool { return len(rec.received())-before == len(msgs) }, 10*time.Second, 10*time.Millisecond)
			calls := rec.received()[before:]

			d := referenceDispatcher(t, dir)
			var prevID uint64
			for i, m := range msgs {
				var req metricpb.HandleMetricRequest
				require.NoError(t, req.Unmarshal(calls[i]))
				id, err := strconv.ParseUint(req.DedupId, 10, 64)
				require.NoError(t, err)
				if i > 0 {
					require.Equal(t, prevID+1, id, "one dedup_id per call, in sequence")
				}
				prevID = id

				report := d.Build(bags(t, m, attrmap.Options{MixerExact: exact}))
				require.Len(t, report.Calls, 1)
				want, err := encode.Request(report.Calls[0].Instances, report.Calls[0].Handler.AdapterConfig, req.DedupId)
				require.NoError(t, err)
				wantCanon, err := encode.CanonicalMapOrder(want)
				require.NoError(t, err)
				gotCanon, err := encode.CanonicalMapOrder(calls[i])
				require.NoError(t, err)
				require.True(t, bytes.Equal(wantCanon, gotCanon), "message %d: the call differs from Mixer's", i)
				if m.GetTcpLogs() != nil {
					require.Len(t, req.Instances, 3, "pathonly cannot be built for TCP entries; requestcount is sent alone")
				} else {
					require.Len(t, req.Instances, 2*len(m.GetHttpLogs().LogEntry))
				}
			}
			text := scrape(t, a)
			require.Contains(t, text, fmt.Sprintf(`meshmetrics_accesslog_instances_forwarded_total{handler="recorder.handler.istio-system",result="ok"} %d`, 2*len(tr.http)+3))
			require.Contains(t, text, `meshmetrics_accesslog_skipped_total{reason="instance_error"} 3`)
		})
	}
}

// referenceDispatcher resolves the directory as mockmixer would, the
// meshmetrics handlers left out.
func referenceDispatcher(t *testing.T, dir string) *dispatch.Dispatcher {
	t.Helper()
	store, err := mixerless.LoadStore(dir)
	require.NoError(t, err)
	d, err := dispatch.New(store, dispatch.Options{InProcess: func(a *crd.ResolvedAction) bool { return mixerless.IsLocal(a.Adapter) }})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// bags builds the bags of a message with the adapter's mapping, one Record
// per entry (kept, since Build reads them all).
func bags(t *testing.T, m *alsv3.StreamAccessLogsMessage, o attrmap.Options) []expr.Bag {
	t.Helper()
	raw, err := proto.Marshal(m)
	require.NoError(t, err)
	store, err := mixerless.LoadStore(t.TempDir())
	require.NoError(t, err)
	manifest, err := store.Manifest()
	require.NoError(t, err)
	mapper, err := attrmap.New(expr.NewLayout(manifest), o)
	require.NoError(t, err)
	var msg logentry.Message
	require.NoError(t, msg.Parse(raw))
	var out []expr.Bag
	for i := 0; i < msg.Len(); i++ {
		var e logentry.Entry
		require.NoError(t, msg.Entry(i, &e))
		b := mapper.NewBuilder()
		b.Build(&e)
		out = append(out, b.Record)
	}
	return out
}

// TestForwardingNeverBlocksTheStream: another adapter that never answers
// fills its handler's queue; calls beyond are dropped and counted, and
// Envoy's stream is read and answered all the same.
func TestForwardingNeverBlocksTheStream(t *testing.T) {
	rec := startRecorder(t, true)
	dir := configDir(t, forwardConfig(rec.addr))
	a := startAdapter(t, dir, adapter.ALSOptions{ForwardQueue: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, finish := alsStream(t, ctx, a.GRPCAddr(), envoyals.MethodV3)
	entry := httpEntry("reviews.default.svc.cluster.local", "/v1/damage?analytic=1", 200, corev3.RequestMethod_GET, nil)
	for i := 0; i < 50; i++ {
		require.NoError(t, st.SendMsg(httpMessage(i == 0, entry)))
	}
	require.NoError(t, finish(), "the stream is answered although the other adapter hangs")
	require.NoError(t, a.Flush(ctx))
	text := scrape(t, a)
	// One call in flight, two queued, 47 dropped: two instances each.
	require.Contains(t, text, `meshmetrics_accesslog_skipped_total{reason="forward_queue_full"} 94`)
	require.Contains(t, text, `meshmetrics_accesslog_instances_dispatched_total{handler="analyticprom.handler.istio-system"} 50`)
}

func TestEmbeddedCRsMatchDeploy(t *testing.T) {
	for _, f := range []string{"adapter.yaml", "template-metric.yaml"} {
		want, err := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "kubernetes", f))
		require.NoError(t, err)
		got, err := os.ReadFile(f)
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "%s: copy deploy/kubernetes/%s here (make generate writes it)", f, f)
	}
}

func TestLoadStoreRefusesBrokenConfigWithFileAndLine(t *testing.T) {
	dir := configDir(t, handlers("")+"---\napiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: r, namespace: istio-system}\nspec:\n  match: request.nope == 1\n  actions: [{handler: prometheus, instances: [requestcount]}]\n")
	store, err := mixerless.LoadStore(dir)
	require.NoError(t, err)
	_, err = mixerless.Compile(store, mixerless.Options{})
	require.ErrorContains(t, err, filepath.Join(dir, "handlers.yaml")+":")
	require.ErrorContains(t, err, "unknown attribute 'request.nope'")

	// A directory that defines its own manifests, adapter and template gets
	// none of the embedded copies (they would be defined twice).
	dir = configDir(t, handlers(""))
	for _, f := range []string{"adapter.yaml", "template-metric.yaml"} {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), b, 0o600))
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "mixer", "attributes.yaml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "attributes.yaml"), b, 0o600))
	store, err = mixerless.LoadStore(dir)
	require.NoError(t, err)
	c, err := mixerless.Compile(store, mixerless.Options{})
	require.NoError(t, err)
	local, remote := c.Handlers()
	require.Equal(t, []string{"analyticprom.handler.istio-system", "prometheus.handler.istio-system"}, local)
	require.Empty(t, remote)
	require.True(t, strings.Contains(c.Summary(), "2 meshmetrics handlers"))
}

// TestTypedPathMatchesInterpreterOnTheSamples evaluates every expression of
// the samples and of Istio's standard config (rule matches, instance values
// and dimensions) on bags built from access-log entries, with the typed
// programs the runtime uses and with the interpreter: same value or same
// error, always.
func TestTypedPathMatchesInterpreterOnTheSamples(t *testing.T) {
	samples, err := filepath.Glob(filepath.Join("..", "..", "..", "deploy", "kubernetes", "samples", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, samples)
	tr := makeTraffic(0)
	msgs := []*alsv3.StreamAccessLogsMessage{httpMessage(true, tr.http...), tcpMessage(tr.tcp...), httpMessage(false, &alsdata.HTTPAccessLogEntry{}),
		tcpMessage(&alsdata.TCPAccessLogEntry{})}
	checked := 0
	for _, sample := range append(samples, "") {
		dir := configDir(t, handlers(""))
		if sample != "" {
			b, err := os.ReadFile(sample)
			require.NoError(t, err)
			// The samples define their own analyticcounter instance.
			require.NoError(t, os.Remove(filepath.Join(dir, "istio", "analyticcounter.yaml")))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "handlers.yaml"), []byte(strings.SplitN(handlers(""), "---\napiVersion: config.istio.io/v1alpha2\nkind: handler\nmetadata: {name: analyticprom", 2)[0]), 0o600))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "sample.yaml"), b, 0o600))
			if !strings.Contains(string(b), "kind: instance") {
				c, err := os.ReadFile(filepath.Join("testdata", "istio", "analyticcounter.yaml"))
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(dir, "istio", "analyticcounter.yaml"), c, 0o600))
			}
		}
		store, err := mixerless.LoadStore(dir)
		require.NoError(t, err, sample)
		d, err := dispatch.New(store, dispatch.Options{InProcess: func(*crd.ResolvedAction) bool { return true }})
		require.NoError(t, err, sample)
		var exprs []*expr.Expr
		for _, r := range d.Rules() {
			exprs = append(exprs, r.Match)
			for _, a := range r.Actions {
				for _, ri := range a.Instances {
					if ri.Value != nil {
						exprs = append(exprs, ri.Value)
					}
					for _, e := range ri.Dimensions {
						exprs = append(exprs, e)
					}
				}
			}
		}
		for _, exact := range []bool{true, false} {
			for _, m := range msgs {
				for _, bag := range bags(t, m, attrmap.Options{MixerExact: exact}) {
					rec := bag.(*expr.Record)
					for _, e := range exprs {
						p, err := e.Program(rec.Layout())
						require.NoError(t, err)
						want, wantErr := e.Eval(rec)
						got, gotErr := p.Eval(rec)
						if wantErr != nil || gotErr != nil {
							require.Error(t, wantErr, e.String())
							require.Error(t, gotErr, e.String())
							require.Equal(t, wantErr.Error(), gotErr.Error(), e.String())
							continue
						}
						require.Equal(t, fmt.Sprint(want), fmt.Sprint(got.Interface(p.Type())), e.String())
						checked++
					}
				}
			}
		}
	}
	require.Greater(t, checked, 1000)
}
