package attrmap_test

import (
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/attrmap"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/logentry"
	"github.com/meshmetrics/meshmetrics/adapter/rules/attributes"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

func layout(t testing.TB) *expr.Layout {
	s, err := crd.LoadSources([]crd.Source{attributes.Source(), {Name: "ext", Data: []byte(attrmap.ExtensionManifest)}})
	require.NoError(t, err)
	m, err := s.Manifest()
	require.NoError(t, err)
	return expr.NewLayout(m)
}

func sock(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func uriSAN(s string) *alsdata.TLSProperties_CertificateProperties_SubjectAltName {
	return &alsdata.TLSProperties_CertificateProperties_SubjectAltName{San: &alsdata.TLSProperties_CertificateProperties_SubjectAltName_Uri{Uri: s}}
}

func dnsSAN(s string) *alsdata.TLSProperties_CertificateProperties_SubjectAltName {
	return &alsdata.TLSProperties_CertificateProperties_SubjectAltName{San: &alsdata.TLSProperties_CertificateProperties_SubjectAltName_Dns{Dns: s}}
}

var start = time.Unix(1700000000, 123000000)

func peerStruct(t testing.TB) *anypb.Any {
	s, err := structpb.NewStruct(map[string]any{"NAME": "productpage-v1-abc", "NAMESPACE": "bookinfo", "WORKLOAD_NAME": "productpage-v1",
		"OWNER": "kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/productpage-v1", "LABELS": map[string]any{"app": "productpage"}, "X": 1.0})
	require.NoError(t, err)
	a, err := anypb.New(s)
	require.NoError(t, err)
	return a
}

func common(t testing.TB) *alsdata.AccessLogCommon {
	return &alsdata.AccessLogCommon{
		DownstreamRemoteAddress:       sock("10.0.0.9", 5555),
		DownstreamLocalAddress:        sock("10.0.0.2", 9080),
		DownstreamDirectRemoteAddress: sock("10.0.0.1", 41000),
		UpstreamRemoteAddress:         sock("10.0.0.3", 9081),
		TlsProperties: &alsdata.TLSProperties{
			TlsSniHostname: "outbound_.9080_._.reviews.default.svc.cluster.local",
			LocalCertificateProperties: &alsdata.TLSProperties_CertificateProperties{SubjectAltName: []*alsdata.TLSProperties_CertificateProperties_SubjectAltName{
				uriSAN("spiffe://cluster.local/ns/default/sa/reviews"), dnsSAN("ignored")}},
			PeerCertificateProperties: &alsdata.TLSProperties_CertificateProperties{SubjectAltName: []*alsdata.TLSProperties_CertificateProperties_SubjectAltName{
				dnsSAN("peer.example")}},
		},
		StartTime:                  timestamppb.New(start),
		TimeToFirstUpstreamRxByte:  durationpb.New(1500 * time.Millisecond),
		TimeToLastDownstreamTxByte: durationpb.New(1700 * time.Millisecond),
		Duration:                   durationpb.New(1800 * time.Millisecond),
		UpstreamCluster:            "outbound|9080||reviews.default.svc.cluster.local",
		ResponseFlags: &alsdata.ResponseFlags{DownstreamProtocolError: true, NoHealthyUpstream: true,
			UnauthorizedDetails: &alsdata.ResponseFlags_Unauthorized{}, UpstreamMaxStreamDurationReached: true},
		RouteName:          "default",
		FilterStateObjects: map[string]*anypb.Any{"wasm.downstream_peer": peerStruct(t), "other": {TypeUrl: "x", Value: []byte{1}}},
	}
}

func fullHTTP(t testing.TB) *alsdata.HTTPAccessLogEntry {
	return &alsdata.HTTPAccessLogEntry{
		CommonProperties: common(t),
		Request: &alsdata.HTTPRequestProperties{
			RequestMethod: corev3.RequestMethod_POST, Scheme: "http", Authority: "reviews:9080", Path: "/v1/damage?analytic=1",
			UserAgent: "curl/8", Referer: "http://productpage/", RequestId: "rid-1", RequestHeadersBytes: 120, RequestBodyBytes: 33,
			RequestHeaders: map[string]string{"content-type": "application/grpc+proto", "x-caller": "tester"},
		},
		Response: &alsdata.HTTPResponseProperties{
			ResponseCode: wrapperspb.UInt32(503), ResponseHeadersBytes: 80, ResponseBodyBytes: 1000,
			ResponseHeaders: map[string]string{"server": "envoy"},
		},
	}
}

func fullTCP(t testing.TB) *alsdata.TCPAccessLogEntry {
	return &alsdata.TCPAccessLogEntry{CommonProperties: common(t), ConnectionProperties: &alsdata.ConnectionProperties{ReceivedBytes: 10, SentBytes: 20}}
}

func ip16(s string) []byte { return []byte(net.ParseIP(s).To16()) }

// mixerHTTP is what Mixer 1.7.8's AccessLogProtoBag makes of fullHTTP, less
// source.port, which Mixer puts in its bag although no manifest of Istio
// declares it (so no rule can read it): a Record holds declared attributes.
func mixerHTTP() map[string]any {
	return map[string]any{
		"context.protocol":                 "grpc",
		"request.time":                     start,
		"response.time":                    start.Add(500 * time.Millisecond), // only the nanos of 1.5s
		"request.host":                     "reviews:9080",
		"request.method":                   "POST",
		"request.path":                     "/v1/damage?analytic=1",
		"request.scheme":                   "http",
		"request.useragent":                "curl/8",
		"request.headers":                  map[string]string{"content-type": "application/grpc+proto", "x-caller": "tester"},
		"response.headers":                 map[string]string{"server": "envoy"},
		"response.code":                    int64(503),
		"response.size":                    int64(1000),
		"response.total_size":              int64(1080),
		"context.reporter.kind":            "inbound",
		"destination.ip":                   ip16("10.0.0.2"),
		"destination.port":                 int64(9080),
		"source.ip":                        ip16("10.0.0.1"),
		"context.proxy_error_code":         "UH,UAEX,DPE",
		"destination.principal":            "cluster.local/ns/default/sa/reviews",
		"source.principal":                 "",
		"connection.requested_server_name": "outbound_.9080_._.reviews.default.svc.cluster.local",
		"context.reporter.uid":             "envoy_accesslog_service",
	}
}

func mixerTCP() map[string]any {
	m := mixerHTTP()
	for _, k := range []string{"request.time", "response.time", "request.host", "request.method", "request.path", "request.scheme",
		"request.useragent", "request.headers", "response.headers", "response.code", "response.size", "response.total_size"} {
		delete(m, k)
	}
	m["context.protocol"] = "tcp"
	m["context.time"] = start
	m["connection.received.bytes"] = int64(10)
	m["connection.sent.bytes"] = int64(20)
	return m
}

func extended(m map[string]any, http bool) map[string]any {
	add := map[string]any{
		"upstream.ip": ip16("10.0.0.3"), "upstream.port": int64(9081), "upstream.cluster": "outbound|9080||reviews.default.svc.cluster.local",
		"route.name": "default", "destination.service.host": "reviews.default.svc.cluster.local", "destination.service.name": "reviews",
		"destination.service.namespace": "default", "source.name": "productpage-v1-abc", "source.namespace": "bookinfo",
		"source.workload.name": "productpage-v1", "source.workload.namespace": "bookinfo",
		"source.owner": "kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/productpage-v1",
	}
	if http {
		add["response.time"] = start.Add(1500 * time.Millisecond)
		add["response.duration"] = 1700 * time.Millisecond
		add["request.size"] = int64(33)
		add["request.total_size"] = int64(153)
		add["request.id"] = "rid-1"
		add["request.referer"] = "http://productpage/"
		add["source.user"] = "tester"
	}
	for k, v := range add {
		m[k] = v
	}
	return m
}

// bagOf builds the bags of a message and returns them as maps.
func bagOf(t testing.TB, o attrmap.Options, msg *alsv3.StreamAccessLogsMessage) []map[string]any {
	raw, err := proto.Marshal(msg)
	require.NoError(t, err)
	mapper, err := attrmap.New(layout(t), o)
	require.NoError(t, err)
	var m logentry.Message
	require.NoError(t, m.Parse(raw))
	b := mapper.NewBuilder()
	var out []map[string]any
	for i := 0; i < m.Len(); i++ {
		var e logentry.Entry
		require.NoError(t, m.Entry(i, &e))
		b.Build(&e)
		got := map[string]any{}
		for _, n := range b.Record.Names() {
			v, _ := b.Record.Get(n)
			if tm, ok := v.(time.Time); ok {
				v = time.Unix(0, tm.UnixNano())
			}
			got[n] = v
		}
		out = append(out, got)
	}
	return out
}

func httpMsg(entries ...*alsdata.HTTPAccessLogEntry) *alsv3.StreamAccessLogsMessage {
	return &alsv3.StreamAccessLogsMessage{LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries}}}
}

func tcpMsg(entries ...*alsdata.TCPAccessLogEntry) *alsv3.StreamAccessLogsMessage {
	return &alsv3.StreamAccessLogsMessage{LogEntries: &alsv3.StreamAccessLogsMessage_TcpLogs{TcpLogs: &alsv3.StreamAccessLogsMessage_TCPAccessLogEntries{LogEntry: entries}}}
}

func normalizeTimes(m map[string]any) map[string]any {
	for k, v := range m {
		if tm, ok := v.(time.Time); ok {
			m[k] = time.Unix(0, tm.UnixNano())
		}
	}
	return m
}

// TestEveryAttribute covers every attribute of the mapping, Mixer-exact and
// extended, for HTTP and TCP entries and for what entries lack.
func TestEveryAttribute(t *testing.T) {
	exact := attrmap.Options{MixerExact: true, HeaderAttributes: map[string]string{"x-caller": "source.user"}}
	ext := attrmap.Options{HeaderAttributes: map[string]string{"x-caller": "source.user"}}
	plain := func(e *alsdata.HTTPAccessLogEntry) *alsdata.HTTPAccessLogEntry { return e }
	tests := []struct {
		name string
		opts attrmap.Options
		msg  *alsv3.StreamAccessLogsMessage
		want map[string]any
	}{
		{"http mixer-exact", exact, httpMsg(fullHTTP(t)), mixerHTTP()},
		{"http extended", ext, httpMsg(fullHTTP(t)), extended(mixerHTTP(), true)},
		{"tcp mixer-exact", exact, tcpMsg(fullTCP(t)), mixerTCP()},
		{"tcp extended", ext, tcpMsg(fullTCP(t)), extended(mixerTCP(), false)},
		{"empty http entry", exact, httpMsg(&alsdata.HTTPAccessLogEntry{}), map[string]any{
			"context.protocol": "http", "context.reporter.kind": "inbound", "context.proxy_error_code": "-", "context.reporter.uid": "envoy_accesslog_service"}},
		{"empty tcp entry", ext, tcpMsg(&alsdata.TCPAccessLogEntry{}), map[string]any{
			"context.protocol": "tcp", "context.reporter.kind": "inbound", "context.proxy_error_code": "-", "context.reporter.uid": "envoy_accesslog_service"}},
		{"request and response without fields", exact, httpMsg(plain(&alsdata.HTTPAccessLogEntry{
			Request: &alsdata.HTTPRequestProperties{}, Response: &alsdata.HTTPResponseProperties{},
			CommonProperties: &alsdata.AccessLogCommon{ResponseFlags: &alsdata.ResponseFlags{}, TlsProperties: &alsdata.TLSProperties{},
				DownstreamLocalAddress:        &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/s"}}},
				DownstreamDirectRemoteAddress: sock("not-an-ip", 7)}})), map[string]any{
			"context.protocol": "http", "request.host": "", "request.method": "METHOD_UNSPECIFIED", "request.path": "", "request.scheme": "",
			"request.useragent": "", "response.headers": map[string]string{}, "response.code": int64(0), "response.size": int64(0),
			"response.total_size": int64(0), "context.reporter.kind": "inbound", "context.proxy_error_code": "-",
			"connection.requested_server_name": "", "source.ip": []byte(nil),
			"context.reporter.uid": "envoy_accesslog_service"}},
		{"extended without request: no request.size", ext, httpMsg(&alsdata.HTTPAccessLogEntry{CommonProperties: &alsdata.AccessLogCommon{
			UpstreamCluster: "inbound|9080||", Duration: durationpb.New(time.Second)}}), map[string]any{
			"context.protocol": "http", "context.reporter.kind": "inbound", "context.proxy_error_code": "-", "context.reporter.uid": "envoy_accesslog_service",
			"upstream.cluster": "inbound|9080||", "response.duration": time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := bagOf(t, tt.opts, tt.msg)
			require.Len(t, got, 1)
			require.Equal(t, normalizeTimes(tt.want), got[0])
		})
	}
}

func TestResponseFlagsInMixerOrder(t *testing.T) {
	all := &alsdata.ResponseFlags{FailedLocalHealthcheck: true, NoHealthyUpstream: true, UpstreamRequestTimeout: true, LocalReset: true,
		UpstreamRemoteReset: true, UpstreamConnectionFailure: true, UpstreamConnectionTermination: true, UpstreamOverflow: true,
		NoRouteFound: true, DelayInjected: true, FaultInjected: true, RateLimited: true, UnauthorizedDetails: &alsdata.ResponseFlags_Unauthorized{},
		RateLimitServiceError: true, DownstreamConnectionTermination: true, UpstreamRetryLimitExceeded: true, StreamIdleTimeout: true,
		InvalidEnvoyRequestHeaders: true, DownstreamProtocolError: true, NoClusterFound: true, OverloadManager: true}
	for _, tt := range []struct {
		flags *alsdata.ResponseFlags
		want  string
	}{
		{all, "LH,UH,UT,LR,UR,UF,UC,UO,NR,DI,FI,RL,UAEX,RLSE,DC,URX,SI,IH,DPE"},
		{&alsdata.ResponseFlags{DownstreamProtocolError: true, FailedLocalHealthcheck: true}, "LH,DPE"},
		{&alsdata.ResponseFlags{NoClusterFound: true}, "-"}, // flags newer than Mixer 1.7.8 are not Mixer's codes
		{&alsdata.ResponseFlags{UnauthorizedDetails: &alsdata.ResponseFlags_Unauthorized{}}, "UAEX"},
		{&alsdata.ResponseFlags{NoRouteFound: true}, "NR"},
		{&alsdata.ResponseFlags{}, "-"},
		{nil, "-"},
	} {
		got := bagOf(t, attrmap.Options{MixerExact: true}, tcpMsg(&alsdata.TCPAccessLogEntry{CommonProperties: &alsdata.AccessLogCommon{ResponseFlags: tt.flags}}))
		require.Equal(t, tt.want, got[0]["context.proxy_error_code"])
	}
}

func TestPrincipalsAndServices(t *testing.T) {
	entry := func(local *alsdata.TLSProperties_CertificateProperties_SubjectAltName, cluster, authority string) *alsdata.HTTPAccessLogEntry {
		return &alsdata.HTTPAccessLogEntry{CommonProperties: &alsdata.AccessLogCommon{UpstreamCluster: cluster, TlsProperties: &alsdata.TLSProperties{
			LocalCertificateProperties: &alsdata.TLSProperties_CertificateProperties{SubjectAltName: []*alsdata.TLSProperties_CertificateProperties_SubjectAltName{local}}}},
			Request: &alsdata.HTTPRequestProperties{Authority: authority}}
	}
	got := bagOf(t, attrmap.Options{}, httpMsg(
		entry(uriSAN("https://not-spiffe/x"), "outbound|80||ratings", "x"),
		entry(dnsSAN("a.b"), "passthrough", "details.bookinfo:9080"),
		entry(uriSAN("spiffe://td/ns/n/sa/s"), "", "productpage:9080"),
	))
	require.Equal(t, "https://not-spiffe/x", got[0]["destination.principal"])
	require.Equal(t, "ratings", got[0]["destination.service.host"])
	require.Equal(t, "ratings", got[0]["destination.service.name"])
	require.NotContains(t, got[0], "destination.service.namespace")
	require.Equal(t, "", got[1]["destination.principal"])
	require.Equal(t, "details.bookinfo:9080", got[1]["destination.service.host"])
	require.Equal(t, "details", got[1]["destination.service.name"])
	require.Equal(t, "bookinfo", got[1]["destination.service.namespace"])
	require.Equal(t, "td/ns/n/sa/s", got[2]["destination.principal"])
	require.Equal(t, "productpage", got[2]["destination.service.name"])
	require.NotContains(t, got[2], "destination.service.namespace")
}

func TestUnknownMethodAndIPv6(t *testing.T) {
	got := bagOf(t, attrmap.Options{MixerExact: true}, httpMsg(&alsdata.HTTPAccessLogEntry{
		Request:          &alsdata.HTTPRequestProperties{RequestMethod: corev3.RequestMethod(42)},
		CommonProperties: &alsdata.AccessLogCommon{DownstreamLocalAddress: sock("fe80::1", 1), DownstreamDirectRemoteAddress: sock("fe80::1%eth0", 2)},
	}))
	require.Equal(t, "42", got[0]["request.method"])
	require.Equal(t, ip16("fe80::1"), got[0]["destination.ip"])
	require.Equal(t, []byte(nil), got[0]["source.ip"], "net.ParseIP refuses zones, so Mixer stores nil")
}

func TestMapperRefusesBadOptions(t *testing.T) {
	l := layout(t)
	for opts, want := range map[string]attrmap.Options{
		"lower case":               {HeaderAttributes: map[string]string{"X-Caller": "source.user"}},
		"declared by no attribute": {HeaderAttributes: map[string]string{"x": "nope.nope"}},
		"can fill only a STRING":   {HeaderAttributes: map[string]string{"x": "request.size"}},
	} {
		_, err := attrmap.New(l, want)
		require.ErrorContains(t, err, opts)
	}
	_, err := attrmap.New(expr.NewLayout(expr.Manifest{"request.size": expr.String}), attrmap.Options{})
	require.ErrorContains(t, err, "attribute request.size is STRING in the attribute manifests; the access-log mapping gives it INT64")
}

func TestBuildingAllocatesNothing(t *testing.T) {
	raw, err := proto.Marshal(httpMsg(fullHTTP(t)))
	require.NoError(t, err)
	mapper, err := attrmap.New(layout(t), attrmap.Options{HeaderAttributes: map[string]string{"x-caller": "source.user"}})
	require.NoError(t, err)
	var m logentry.Message
	require.NoError(t, m.Parse(raw))
	var e logentry.Entry
	require.NoError(t, m.Entry(0, &e))
	b := mapper.NewBuilder()
	b.Build(&e)
	require.Zero(t, testing.AllocsPerRun(100, func() { b.Build(&e) }))
}

// FuzzBuild builds bags from arbitrary messages the reader accepts, in both
// modes: it must not panic, and every attribute must hold a value of its
// declared type (the Record is typed: Get returns it boxed as the
// interpreter expects).
// fuzz budget: 50000x
func FuzzBuild(f *testing.F) {
	for _, m := range []*alsv3.StreamAccessLogsMessage{httpMsg(fullHTTP(f)), tcpMsg(fullTCP(f)), httpMsg(&alsdata.HTTPAccessLogEntry{})} {
		raw, err := proto.Marshal(m)
		require.NoError(f, err)
		f.Add(raw)
	}
	l := layout(f)
	exact, err := attrmap.New(l, attrmap.Options{MixerExact: true})
	require.NoError(f, err)
	ext, err := attrmap.New(l, attrmap.Options{HeaderAttributes: map[string]string{"x-caller": "source.user"}})
	require.NoError(f, err)
	be, bx := exact.NewBuilder(), ext.NewBuilder()
	f.Fuzz(func(t *testing.T, raw []byte) {
		var m logentry.Message
		if m.Parse(raw) != nil {
			return
		}
		var e logentry.Entry
		for i := 0; i < m.Len(); i++ {
			if m.Entry(i, &e) != nil {
				return
			}
			for _, b := range []*attrmap.Builder{be, bx} {
				b.Build(&e)
				for _, n := range b.Record.Names() {
					slot, _ := l.Slot(n)
					v, ok := b.Record.Get(n)
					require.True(t, ok)
					requireType(t, v, l.Type(slot), n)
				}
				// Mixer-exact attributes are a subset of the extended bag's,
				// with the same values except response.time.
			}
			for _, n := range be.Record.Names() {
				ve, _ := be.Record.Get(n)
				vx, ok := bx.Record.Get(n)
				require.True(t, ok, n)
				if n != "response.time" && n != "source.namespace" && n != "source.name" && n != "source.user" {
					require.Equal(t, ve, vx, n)
				}
			}
		}
	})
}

func requireType(t *testing.T, v any, typ expr.ValueType, name string) {
	ok := false
	switch v.(type) {
	case string:
		ok = typ == expr.String || typ == expr.DNSName || typ == expr.URI || typ == expr.EmailAddress
	case int64:
		ok = typ == expr.Int64
	case time.Duration:
		ok = typ == expr.Duration
	case time.Time:
		ok = typ == expr.Timestamp
	case []byte:
		ok = typ == expr.IPAddress
	case map[string]string:
		ok = typ == expr.StringMap
	case bool:
		ok = typ == expr.Bool
	}
	require.True(t, ok, "%s: %T is not %s", name, v, typ)
}

// BenchmarkBuildBag builds the extended bag of a full HTTP entry.
func BenchmarkBuildBag(b *testing.B) {
	raw, err := proto.Marshal(httpMsg(fullHTTP(b)))
	require.NoError(b, err)
	mapper, err := attrmap.New(layout(b), attrmap.Options{HeaderAttributes: map[string]string{"x-caller": "source.user"}})
	require.NoError(b, err)
	var m logentry.Message
	require.NoError(b, m.Parse(raw))
	var e logentry.Entry
	require.NoError(b, m.Entry(0, &e))
	bld := mapper.NewBuilder()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bld.Build(&e)
	}
}

// TestNeededAttributesOnly: a mapping told which attributes the config
// reads builds only those, and its reader skips the parts only the others
// come from; the attributes it builds are those of the full bag.
func TestNeededAttributesOnly(t *testing.T) {
	needed := map[string]bool{"request.path": true, "response.code": true, "context.protocol": true, "source.principal": true}
	mapper, err := attrmap.New(layout(t), attrmap.Options{Needed: needed})
	require.NoError(t, err)
	require.Equal(t, logentry.NeedTLS|logentry.NeedRequestHeaders, mapper.Need())
	full, err := attrmap.New(layout(t), attrmap.Options{})
	require.NoError(t, err)
	require.Equal(t, logentry.NeedAll, full.Need())
	raw, err := proto.Marshal(httpMsg(fullHTTP(t)))
	require.NoError(t, err)
	var m logentry.Message
	require.NoError(t, m.Parse(raw))
	var e, ef logentry.Entry
	require.NoError(t, m.EntryNeed(0, &e, mapper.Need()))
	require.NoError(t, m.Entry(0, &ef))
	b, bf := mapper.NewBuilder(), full.NewBuilder()
	b.Build(&e)
	bf.Build(&ef)
	require.Equal(t, []string{"context.protocol", "request.path", "response.code", "source.principal"}, b.Record.Names())
	for _, n := range b.Record.Names() {
		v, _ := b.Record.Get(n)
		vf, _ := bf.Record.Get(n)
		require.Equal(t, vf, v, n)
	}
}
