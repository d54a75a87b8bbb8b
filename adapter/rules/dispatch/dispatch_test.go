package dispatch

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/golden"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/rules/attributes"
	"github.com/meshmetrics/meshmetrics/adapter/rules/bag"
	"github.com/meshmetrics/meshmetrics/adapter/rules/conn"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/encode"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
	"github.com/meshmetrics/meshmetrics/config"
)

func repo(parts ...string) string {
	return filepath.Join(append([]string{"..", "..", ".."}, parts...)...)
}

// base is the adapter and metric template CRs that `make generate` writes.
func base() []string {
	return []string{repo("deploy", "kubernetes", "adapter.yaml"), repo("deploy", "kubernetes", "template-metric.yaml")}
}

func load(t *testing.T, paths ...string) *crd.Store {
	t.Helper()
	s, err := attributes.Load(append(base(), paths...)...)
	require.NoError(t, err)
	return s
}

func bags(bs ...expr.MapBag) []expr.Bag {
	out := make([]expr.Bag, len(bs))
	for i, b := range bs {
		out[i] = b
	}
	return out
}

// TestGolden drives the whole path, CRDs to bytes, and gets the protocol doc's golden:
// the quoted "1" becomes int64_value, the params come out in sorted-key order, the instance
// name is <name>.instance.<namespace> and comes last, dedup_id is the seeded counter.
func TestGolden(t *testing.T) {
	want, err := golden.ReadHex("handlemetric-analyticcounter.hex")
	require.NoError(t, err)
	d, err := New(load(t, repo("testdata", "mixer", "golden", "analyticcounter.yaml")),
		Options{DedupSeed: func(string) uint64 { return 42 }})
	require.NoError(t, err)
	rep := d.Build(bags(expr.MapBag{"request.path": "/v1/damage"}))
	require.Empty(t, rep.Errors)
	require.Len(t, rep.Calls, 1)
	id, got, err := d.Encode(rep.Calls[0])
	require.NoError(t, err)
	require.Equal(t, "42", id)
	canonWant, err := encode.CanonicalMapOrder(want)
	require.NoError(t, err)
	canonGot, err := encode.CanonicalMapOrder(got)
	require.NoError(t, err)
	require.Equal(t, canonWant, canonGot)

	id, _, err = d.Encode(rep.Calls[0])
	require.NoError(t, err)
	require.Equal(t, "43", id, "one dedup_id per call, counting up")
}

// samples are the plain sample files (the directory also holds mutual-TLS variants that
// define the same handlers and rules, to be applied instead).
func samples() []string {
	var out []string
	for _, f := range []string{"analyticcounter.yaml", "analyticprom-prometheus.yaml", "analyticprom-librato.yaml"} {
		out = append(out, repo("deploy", "kubernetes", "samples", f))
	}
	return out
}

func sampleDispatcher(t *testing.T, o Options) *Dispatcher {
	t.Helper()
	d, err := New(load(t, samples()...), o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func sampleBags(t *testing.T, d *Dispatcher) []expr.Bag {
	t.Helper()
	bs, err := bag.ReadFile(repo("testdata", "attributes", "analytic.yaml"), d.Manifest())
	require.NoError(t, err)
	return bags(bs...)
}

func TestSamples(t *testing.T) {
	d := sampleDispatcher(t, Options{})
	require.Empty(t, d.Warnings())
	require.Empty(t, d.Notes())

	bs := sampleBags(t, d)
	require.Len(t, bs, 10)
	rep := d.Build(bs)
	require.Empty(t, rep.Errors)
	matched := 0
	for _, br := range rep.Bags {
		if len(br.Matched) > 0 {
			require.Equal(t, []string{"analyticprom-librato.rule.istio-system", "analyticprom.rule.istio-system"}, br.Matched)
			matched++
		}
	}
	require.Equal(t, 6, matched)

	require.Len(t, rep.Calls, 2, "one call per handler for the whole report")
	for _, c := range rep.Calls {
		require.Len(t, c.Instances, 6)
		require.Equal(t, "meshmetrics.istio-system.svc.cluster.local:50000", c.Handler.Address)
		require.Equal(t, 5*time.Second, c.Handler.Timeout)
	}
	prom := d.Handler("analyticprom-prometheus.handler.istio-system")
	p, err := config.Decode(true, []byte(prom.AdapterConfig.TypeUrl), prom.AdapterConfig.Value)
	require.NoError(t, err)
	require.NotNil(t, p.Prometheus)
	require.Equal(t, "analytic_requests", p.Metrics[0].Name)
	require.Equal(t, []string{"request_path", "request_method", "response_code", "destination_service", "source_workload"}, p.Metrics[0].LabelNames)
	lib := d.Handler("analyticprom-librato.handler.istio-system")
	p, err = config.Decode(true, []byte(lib.AdapterConfig.TypeUrl), lib.AdapterConfig.Value)
	require.NoError(t, err)
	require.Equal(t, "/var/run/secrets/librato/token", p.Librato.TokenPath)

	_, raw, err := d.Encode(rep.Calls[0])
	require.NoError(t, err)
	var req metricpb.HandleMetricRequest
	require.NoError(t, req.Unmarshal(raw))
	first := req.Instances[0]
	require.Equal(t, "analyticcounter.instance.istio-system", first.Name)
	require.Equal(t, int64(1), first.Value.GetInt64Value(), `value: "1" is an INT64 expression`)
	require.Equal(t, "/v1/damage?analytic=1", first.Dimensions["request_path"].GetStringValue())
	require.Equal(t, int64(200), first.Dimensions["response_code"].GetInt64Value())
	require.Equal(t, "UNSPECIFIED", first.MonitoredResourceType)
	defaults := req.Instances[5]
	require.Equal(t, "unknown", defaults.Dimensions["request_method"].GetStringValue())
	require.Equal(t, "unknown", defaults.Dimensions["source_workload"].GetStringValue())
	require.Equal(t, int64(200), defaults.Dimensions["response_code"].GetInt64Value(), "the | 200 default is an int64 too")

	// A seed makes the dedup_id sequences and the map order reproducible.
	a, b := sampleDispatcher(t, Options{Seed: 9}), sampleDispatcher(t, Options{Seed: 9})
	ca, cb := a.Build(sampleBags(t, a)), b.Build(sampleBags(t, b))
	idA, reqA, err := a.Encode(ca.Calls[0])
	require.NoError(t, err)
	idB, reqB, err := b.Encode(cb.Calls[0])
	require.NoError(t, err)
	require.Equal(t, idA, idB)
	require.Equal(t, reqA, reqB)

	// The address override points cluster config at a local adapter.
	local := sampleDispatcher(t, Options{Address: "127.0.0.1:50000"})
	require.Equal(t, "127.0.0.1:50000", local.Handler("analyticprom-prometheus.handler.istio-system").Address)
}

// write puts a config file together from the sample's documents and the given ones.
func write(t *testing.T, docs ...string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(strings.Join(docs, "\n---\n")), 0o600))
	return dir
}

const instanceDoc = `apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: counter, namespace: istio-system}
spec:
  template: metric
  params:
    value: "1"
    dimensions: {path: request.path | "x"}`

const handlerDoc = `apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: h, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "127.0.0.1:1"}
  params: {metrics: [{instance_name: counter.instance.istio-system, kind: COUNTER}]}`

func ruleDoc(match string) string {
	return `apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: r, namespace: istio-system}
spec:
  match: '` + match + `'
  actions: [{handler: h, instances: [counter]}]`
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		docs []string
		want []string
	}{
		{"unknown attribute", []string{instanceDoc, handlerDoc, ruleDoc(`request.pth == "/"`)},
			[]string{"rule 'r.rule.istio-system' (", "config.yaml:", `match: expression "request.pth == \"/\"": unknown attribute 'request.pth'`}},
		{"type error", []string{instanceDoc, handlerDoc, ruleDoc(`response.code == "200"`)},
			[]string{"type mismatch: INT64 == STRING"}},
		{"missing handler", []string{instanceDoc, ruleDoc(`true`)},
			[]string{"Handler not found: handler='h' (looked for h.handler.istio-system)"}},
		{"missing instance", []string{handlerDoc, ruleDoc(`true`)},
			[]string{"Instance not found: instance='counter' (looked for counter.instance.istio-system)"}},
		{"missing template", []string{strings.Replace(instanceDoc, "template: metric", "template: metricz", 1), handlerDoc, ruleDoc(`true`)},
			[]string{"template 'metricz' not found"}},
		{"params the adapter refuses", []string{instanceDoc, strings.Replace(handlerDoc, "kind: COUNTER", "kind: COUNTR", 1), ruleDoc(`true`)},
			[]string{"handler h.handler.istio-system (", "params do not fit adapter meshmetrics.adapter.istio-system: metrics[0].kind: unrecognized enum value 'COUNTR'"}},
		{"no address", []string{instanceDoc, strings.Replace(handlerDoc, `connection: {address: "127.0.0.1:1"}`, "", 1), ruleDoc(`true`)},
			[]string{"handler h.handler.istio-system (", "empty connection address (set spec.connection.address, or --address)"}},
		{"instance expression", []string{strings.Replace(instanceDoc, `request.path | "x"`, `request.path | 1`, 1), handlerDoc, ruleDoc(`true`)},
			[]string{"instance 'counter.instance.istio-system' (", "dimensions.path: expression \"request.path | 1\": type mismatch: STRING | INT64"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(load(t, write(t, tt.docs...)), Options{})
			require.Error(t, err)
			for _, w := range tt.want {
				require.ErrorContains(t, err, w)
			}
		})
	}

	_, err := attributes.Load(write(t, "kind: rule\nmetadata: [\n"))
	require.ErrorContains(t, err, "config.yaml:2: invalid YAML", "bad YAML is reported with file and line")
}

func TestWarningsAndNotes(t *testing.T) {
	static := `apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: prometheus, namespace: istio-system}
spec: {compiledAdapter: prometheus, params: {}}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: requestcount, namespace: istio-system}
spec: {compiledTemplate: metric, params: {value: "1"}}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: promhttp, namespace: istio-system}
spec: {actions: [{handler: prometheus, instances: [requestcount]}]}`
	d, err := New(load(t, write(t, strings.Replace(instanceDoc, `request.path | "x"`, `'conditional(!connection.mtls, "plain", "mtls")'`, 1),
		handlerDoc, ruleDoc(`startsWith(request.path, "/v1")`), static)), Options{})
	require.NoError(t, err)
	w := d.Warnings()
	require.Len(t, w, 2)
	require.Contains(t, w[0], "instance counter.instance.istio-system (")
	require.Contains(t, w[0], `dimensions.path: expression "conditional(!connection.mtls, \"plain\", \"mtls\")": a real Mixer rejects the ! operator`)
	require.Contains(t, w[1], "rule r.rule.istio-system (")
	require.Contains(t, w[1], `write request.path.startsWith("/v1") instead`)
	require.Equal(t, []string{"rule promhttp.rule.istio-system: handler prometheus.handler.istio-system is compiled into Mixer (compiledAdapter: prometheus); mockmixer skips it"}, d.Notes())

	rep := d.Build(bags(expr.MapBag{"request.path": "/v1/x", "connection.mtls": true}))
	require.Len(t, rep.Calls, 1, "the static handler gets no call")
	require.Equal(t, `"mtls" (string)`, FormatValue(rep.Calls[0].Instances[0].Dimensions[0].Value))
}

func TestBuildErrorsAndScope(t *testing.T) {
	scoped := `apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: shop, namespace: shop}
spec:
  actions: [{handler: h.istio-system, instances: [counter.istio-system]}]`
	strict := strings.Replace(instanceDoc, `request.path | "x"`, `request.path`, 1)
	d, err := New(load(t, write(t, strict, handlerDoc, ruleDoc(`request.size > 10`), scoped)), Options{})
	require.NoError(t, err)

	rep := d.Build(bags(
		expr.MapBag{"request.size": int64(20), "request.path": "/a", "destination.namespace": "shop"},
		expr.MapBag{"request.size": int64(20), "destination.namespace": "other"},
		expr.MapBag{"request.path": "/c", "source.namespace": "shop", "context.reporter.kind": "outbound"},
	))
	require.Equal(t, []string{"r.rule.istio-system", "shop.rule.shop"}, rep.Bags[0].Matched)
	require.Equal(t, []string{"r.rule.istio-system"}, rep.Bags[1].Matched)
	require.Equal(t, []string{"shop.rule.shop"}, rep.Bags[1].OutOfScope, "a rule outside istio-system sees only its namespace's requests")
	require.Equal(t, []string{"shop.rule.shop"}, rep.Bags[2].Matched, "outbound reports are scoped by source.namespace")
	require.Equal(t, []string{"r.rule.istio-system"}, rep.Bags[2].NotMatched)
	require.Len(t, rep.Bags[2].MatchErrors, 1)
	require.EqualError(t, rep.Bags[2].MatchErrors[0], `rule r.rule.istio-system: match "request.size > 10": lookup failed: 'request.size'`)

	require.Len(t, rep.Errors, 1, "bag 2 has no request.path and the dimension has no default")
	require.EqualError(t, rep.Errors[0], "instance counter.instance.istio-system: dimensions: path: lookup failed: 'request.path'")
	require.Len(t, rep.Calls, 1)
	require.Len(t, rep.Calls[0].Instances, 3, "the other instances of the report still go out")
}

func TestSessionBasedAdapterGetsNoConfig(t *testing.T) {
	adapter, err := os.ReadFile(repo("deploy", "kubernetes", "adapter.yaml"))
	require.NoError(t, err)
	session := strings.Replace(strings.Replace(string(adapter), "session_based: false", "session_based: true", 1), "name: meshmetrics", "name: sessioned", 1)
	d, err := New(load(t, write(t, session, instanceDoc, strings.Replace(handlerDoc, "adapter: meshmetrics", "adapter: sessioned", 1), ruleDoc("true"))), Options{})
	require.NoError(t, err)
	rep := d.Build(bags(expr.MapBag{}))
	require.Nil(t, rep.Calls[0].Handler.AdapterConfig)
	_, raw, err := d.Encode(rep.Calls[0])
	require.NoError(t, err)
	var req metricpb.HandleMetricRequest
	require.NoError(t, req.Unmarshal(raw))
	require.Nil(t, req.AdapterConfig)
}

// fakeAdapter answers HandleMetric with err after delay, and records requests.
func fakeAdapter(t *testing.T, delay time.Duration, err error) (string, chan *metricpb.HandleMetricRequest) {
	t.Helper()
	lis, lerr := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, lerr)
	got := make(chan *metricpb.HandleMetricRequest, 100)
	srv := grpc.NewServer(grpc.ForceServerCodecV2(conn.Codec{}), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		var r conn.Raw
		if err := stream.RecvMsg(&r); err != nil {
			return err
		}
		var req metricpb.HandleMetricRequest
		if err := req.Unmarshal(r); err != nil {
			return err
		}
		got <- &req
		select {
		case <-time.After(delay):
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
		if err != nil {
			return err
		}
		return stream.SendMsg(&conn.Raw{})
	}))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), got
}

func TestSend(t *testing.T) {
	addr, got := fakeAdapter(t, 0, nil)
	d := sampleDispatcher(t, Options{Address: addr, DedupSeed: func(string) uint64 { return 100 }})
	rep := d.Build(sampleBags(t, d))
	results := d.SendAll(context.Background(), rep.Calls)
	require.Len(t, results, 2)
	for _, r := range results {
		require.NoError(t, r.Err)
		require.Equal(t, "100", r.DedupID)
	}
	ids := map[string]bool{}
	for range 2 {
		req := <-got
		require.Len(t, req.Instances, 6)
		ids[req.DedupId] = true
	}
	require.Equal(t, map[string]bool{"100": true}, ids, "each handler has its own sequence")

	again := d.Send(context.Background(), rep.Calls[0])
	require.NoError(t, again.Err)
	require.Equal(t, "101", again.DedupID)
}

func TestSendHonoursTheHandlerTimeoutAndReportsErrors(t *testing.T) {
	slow, _ := fakeAdapter(t, time.Minute, nil)
	timeout := strings.Replace(handlerDoc, `connection: {address: "127.0.0.1:1"}`, `connection: {address: "`+slow+`", timeout: 50ms}`, 1)
	d, err := New(load(t, write(t, instanceDoc, timeout, ruleDoc("true"))), Options{})
	require.NoError(t, err)
	defer d.Close()
	rep := d.Build(bags(expr.MapBag{}))
	res := d.Send(context.Background(), rep.Calls[0])
	require.Equal(t, codes.DeadlineExceeded, status.Code(res.Err))

	refusing, _ := fakeAdapter(t, 0, status.Error(codes.InvalidArgument, "bad config"))
	d2, err := New(load(t, write(t, instanceDoc, handlerDoc, ruleDoc("true"))), Options{Address: refusing})
	require.NoError(t, err)
	defer d2.Close()
	res = d2.Send(context.Background(), d2.Build(bags(expr.MapBag{})).Calls[0])
	require.Equal(t, codes.InvalidArgument, status.Code(res.Err))
	require.ErrorContains(t, res.Err, "bad config")
}

func TestGRPCPath(t *testing.T) {
	s := load(t)
	path, err := GRPCPath(s.Templates()[0].Descriptor)
	require.NoError(t, err)
	require.Equal(t, encode.Path, path)
	_, err = GRPCPath("!")
	require.ErrorContains(t, err, "not standard base64")
	_, err = GRPCPath("")
	require.EqualError(t, err, "descriptor has no service named Handle*")
}

func TestFormat(t *testing.T) {
	tests := []struct {
		v    any
		t    expr.ValueType
		want string
	}{
		{"GET", expr.String, `"GET" (string)`},
		{int64(200), expr.Int64, "200 (int64)"},
		{1.0, expr.Double, "1 (double)"},
		{true, expr.Bool, "true (bool)"},
		{time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC), expr.Timestamp, "2020-01-02T03:04:05Z (timestamp)"},
		{1500 * time.Millisecond, expr.Duration, "1.5s (duration)"},
		{net.IP{10, 0, 0, 1}, expr.IPAddress, "10.0.0.1 (ip_address)"},
		{"a@b.c", expr.EmailAddress, `"a@b.c" (email_address)`},
		{"a.b", expr.DNSName, `"a.b" (dns_name)`},
		{"http://a", expr.URI, `"http://a" (uri)`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			v, err := ToValue(tt.v, tt.t)
			require.NoError(t, err)
			require.Equal(t, tt.want, FormatValue(v))
		})
	}
	_, err := ToValue(map[string]string{}, expr.StringMap)
	require.EqualError(t, err, "unsupported type: STRING_MAP")
	require.Equal(t, "<unset>", FormatValue(nil))

	mrt := "UNSPECIFIED"
	v1, _ := ToValue(int64(1), expr.Int64)
	get, _ := ToValue("GET", expr.String)
	path, _ := ToValue("/x", expr.String)
	require.Equal(t, `  c.instance.ns value=1 (int64)
    request_method = "GET" (string)
    request_path = "/x" (string)
    monitored_resource_type = "UNSPECIFIED"
`, FormatInstance(&encode.Instance{Name: "c.instance.ns", Value: v1, MonitoredResourceType: &mrt,
		Dimensions: []encode.Dim{{Key: "request_path", Value: path}, {Key: "request_method", Value: get}}}, "  "))
}
