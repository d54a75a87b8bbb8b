package logentry

import (
	"testing"
	"time"

	corev2 "github.com/envoyproxy/go-control-plane/envoy/api/v2/core"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdatav2 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v2"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv2 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v2"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func fullCommon() *alsdata.AccessLogCommon {
	return &alsdata.AccessLogCommon{
		SampleRate:                    1,
		DownstreamRemoteAddress:       sockAddr("10.0.0.9", 5555),
		DownstreamLocalAddress:        sockAddr("10.0.0.2", 9080),
		DownstreamDirectRemoteAddress: sockAddr("10.0.0.1", 41000),
		UpstreamRemoteAddress:         sockAddr("10.0.0.3", 9080),
		UpstreamLocalAddress:          &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/p"}}},
		TlsProperties: &alsdata.TLSProperties{
			TlsSniHostname: "reviews.default.svc.cluster.local",
			LocalCertificateProperties: &alsdata.TLSProperties_CertificateProperties{SubjectAltName: []*alsdata.TLSProperties_CertificateProperties_SubjectAltName{
				{San: &alsdata.TLSProperties_CertificateProperties_SubjectAltName_Uri{Uri: "spiffe://cluster.local/ns/default/sa/reviews"}},
				{San: &alsdata.TLSProperties_CertificateProperties_SubjectAltName_Dns{Dns: "x"}},
			}},
			PeerCertificateProperties: &alsdata.TLSProperties_CertificateProperties{SubjectAltName: []*alsdata.TLSProperties_CertificateProperties_SubjectAltName{
				{San: &alsdata.TLSProperties_CertificateProperties_SubjectAltName_Dns{Dns: "peer.example"}},
			}},
		},
		StartTime:                   timestamppb.New(time.Unix(1700000000, 123000000)),
		TimeToLastRxByte:            durationpb.New(time.Millisecond),
		TimeToFirstUpstreamTxByte:   durationpb.New(2 * time.Millisecond),
		TimeToLastUpstreamTxByte:    durationpb.New(3 * time.Millisecond),
		TimeToFirstUpstreamRxByte:   durationpb.New(1500 * time.Millisecond),
		TimeToLastUpstreamRxByte:    durationpb.New(5 * time.Millisecond),
		TimeToFirstDownstreamTxByte: durationpb.New(6 * time.Millisecond),
		TimeToLastDownstreamTxByte:  durationpb.New(1700 * time.Millisecond),
		UpstreamCluster:             "outbound|9080||reviews.default.svc.cluster.local",
		ResponseFlags:               &alsdata.ResponseFlags{NoHealthyUpstream: true, DownstreamProtocolError: true, UnauthorizedDetails: &alsdata.ResponseFlags_Unauthorized{}},
		RouteName:                   "default",
		FilterStateObjects:          map[string]*anypb.Any{"wasm.downstream_peer": {TypeUrl: "type.googleapis.com/google.protobuf.Struct", Value: []byte{1, 2}}},
		CustomTags:                  map[string]string{"a": "b"},
		Duration:                    durationpb.New(1800 * time.Millisecond),
		StreamId:                    "s",
	}
}

func httpMessage(entries ...*alsdata.HTTPAccessLogEntry) *alsv3.StreamAccessLogsMessage {
	return &alsv3.StreamAccessLogsMessage{
		Identifier: &alsv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "sidecar~10.0.0.2~reviews-v1.default~default.svc.cluster.local"}, LogName: "http_envoy_accesslog"},
		LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries}},
	}
}

func fullHTTPEntry() *alsdata.HTTPAccessLogEntry {
	return &alsdata.HTTPAccessLogEntry{
		CommonProperties: fullCommon(),
		ProtocolVersion:  alsdata.HTTPAccessLogEntry_HTTP2,
		Request: &alsdata.HTTPRequestProperties{
			RequestMethod: corev3.RequestMethod_POST, Scheme: "http", Authority: "reviews:9080", Port: wrapperspb.UInt32(9080),
			Path: "/v1/damage?analytic=1", UserAgent: "curl/8", Referer: "http://a/", ForwardedFor: "1.2.3.4", RequestId: "rid-1",
			OriginalPath: "/orig", RequestHeadersBytes: 120, RequestBodyBytes: 33,
			RequestHeaders: map[string]string{"content-type": "application/grpc+proto"},
		},
		Response: &alsdata.HTTPResponseProperties{
			ResponseCode: wrapperspb.UInt32(503), ResponseHeadersBytes: 80, ResponseBodyBytes: 1000,
			ResponseHeaders: map[string]string{"server": "envoy"}, ResponseTrailers: map[string]string{"t": "1"}, ResponseCodeDetails: "upstream",
		},
	}
}

// expected is what the reader must see in a message decoded by
// go-control-plane's generated code.
func expected(m *alsv3.StreamAccessLogsMessage) (Message, []Entry) {
	var msg Message
	if id := m.GetIdentifier(); id != nil {
		msg.Identifier = true
		msg.LogName = []byte(id.GetLogName())
		msg.NodeID = []byte(id.GetNode().GetId())
	}
	var entries []Entry
	switch {
	case m.GetHttpLogs() != nil:
		msg.Protocol = ProtocolHTTP
		for _, he := range m.GetHttpLogs().GetLogEntry() {
			e := Entry{Protocol: ProtocolHTTP}
			if c := he.GetCommonProperties(); c != nil {
				commonOf(c, &e)
			}
			e.ProtocolVersion = int32(he.GetProtocolVersion())
			if r := he.GetRequest(); r != nil {
				e.Request = Request{Present: true, Method: int32(r.GetRequestMethod()), Scheme: b(r.GetScheme()), Authority: b(r.GetAuthority()),
					Path: b(r.GetPath()), UserAgent: b(r.GetUserAgent()), Referer: b(r.GetReferer()), ForwardedFor: b(r.GetForwardedFor()),
					RequestID: b(r.GetRequestId()), OriginalPath: b(r.GetOriginalPath()), HeadersBytes: r.GetRequestHeadersBytes(),
					BodyBytes: r.GetRequestBodyBytes(), Headers: kvs(r.GetRequestHeaders())}
			}
			if r := he.GetResponse(); r != nil {
				e.Response = Response{Present: true, HasCode: r.GetResponseCode() != nil, Code: r.GetResponseCode().GetValue(),
					HeadersBytes: r.GetResponseHeadersBytes(), BodyBytes: r.GetResponseBodyBytes(), Headers: kvs(r.GetResponseHeaders()),
					CodeDetails: b(r.GetResponseCodeDetails())}
			}
			entries = append(entries, e)
		}
	case m.GetTcpLogs() != nil:
		msg.Protocol = ProtocolTCP
		for _, te := range m.GetTcpLogs().GetLogEntry() {
			e := Entry{Protocol: ProtocolTCP}
			if c := te.GetCommonProperties(); c != nil {
				commonOf(c, &e)
			}
			if cp := te.GetConnectionProperties(); cp != nil {
				e.Connection, e.ReceivedBytes, e.SentBytes = true, cp.GetReceivedBytes(), cp.GetSentBytes()
			}
			entries = append(entries, e)
		}
	}
	return msg, entries
}

func b(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

func kvs(m map[string]string) []KV {
	var out []KV
	for k, v := range m {
		out = append(out, KV{Key: b(k), Value: b(v)})
	}
	return out
}

func addrOf(a *corev3.Address) Address {
	if a == nil {
		return Address{}
	}
	out := Address{Present: true}
	if s := a.GetSocketAddress(); s != nil {
		out.Socket, out.IP, out.Port = true, b(s.GetAddress()), s.GetPortValue()
	}
	return out
}

func timeOf(x interface {
	GetSeconds() int64
	GetNanos() int32
}, present bool) Time {
	if !present {
		return Time{}
	}
	return Time{Present: true, Seconds: x.GetSeconds(), Nanos: x.GetNanos()}
}

func certOf(c *alsdata.TLSProperties_CertificateProperties) Certificate {
	if c == nil {
		return Certificate{}
	}
	out := Certificate{Present: true, SANs: len(c.GetSubjectAltName())}
	if out.SANs > 0 {
		first := c.GetSubjectAltName()[0]
		switch s := first.GetSan().(type) {
		case *alsdata.TLSProperties_CertificateProperties_SubjectAltName_Uri:
			out.FirstURI, out.FirstSAN = true, b(s.Uri)
		case *alsdata.TLSProperties_CertificateProperties_SubjectAltName_Dns:
			out.FirstSAN = b(s.Dns)
		}
	}
	return out
}

func commonOf(c *alsdata.AccessLogCommon, e *Entry) {
	e.Common = true
	e.DownstreamRemoteAddress = addrOf(c.GetDownstreamRemoteAddress())
	e.DownstreamLocalAddress = addrOf(c.GetDownstreamLocalAddress())
	e.DownstreamDirectRemote = addrOf(c.GetDownstreamDirectRemoteAddress())
	e.UpstreamRemoteAddress = addrOf(c.GetUpstreamRemoteAddress())
	e.UpstreamLocalAddress = addrOf(c.GetUpstreamLocalAddress())
	if t := c.GetTlsProperties(); t != nil {
		e.TLS = TLS{Present: true, SNI: b(t.GetTlsSniHostname()), Local: certOf(t.GetLocalCertificateProperties()), Peer: certOf(t.GetPeerCertificateProperties())}
	}
	e.StartTime = timeOf(c.GetStartTime(), c.GetStartTime() != nil)
	e.TimeToLastRxByte = timeOf(c.GetTimeToLastRxByte(), c.GetTimeToLastRxByte() != nil)
	e.TimeToFirstUpstreamTxByte = timeOf(c.GetTimeToFirstUpstreamTxByte(), c.GetTimeToFirstUpstreamTxByte() != nil)
	e.TimeToLastUpstreamTxByte = timeOf(c.GetTimeToLastUpstreamTxByte(), c.GetTimeToLastUpstreamTxByte() != nil)
	e.TimeToFirstUpstreamRxByte = timeOf(c.GetTimeToFirstUpstreamRxByte(), c.GetTimeToFirstUpstreamRxByte() != nil)
	e.TimeToLastUpstreamRxByte = timeOf(c.GetTimeToLastUpstreamRxByte(), c.GetTimeToLastUpstreamRxByte() != nil)
	e.TimeToFirstDownstreamTxByte = timeOf(c.GetTimeToFirstDownstreamTxByte(), c.GetTimeToFirstDownstreamTxByte() != nil)
	e.TimeToLastDownstreamTxByte = timeOf(c.GetTimeToLastDownstreamTxByte(), c.GetTimeToLastDownstreamTxByte() != nil)
	e.Duration = timeOf(c.GetDuration(), c.GetDuration() != nil)
	e.UpstreamCluster = b(c.GetUpstreamCluster())
	e.RouteName = b(c.GetRouteName())
	if f := c.GetResponseFlags(); f != nil {
		e.ResponseFlags.Present = true
		e.ResponseFlags.Unauthorized = f.GetUnauthorizedDetails() != nil
		for num, set := range flagFields(f) {
			if set {
				e.ResponseFlags.Bits |= 1 << (num - 1)
			}
		}
	}
	for k, v := range c.GetFilterStateObjects() {
		e.FilterState = append(e.FilterState, FilterState{Key: b(k), TypeURL: b(v.GetTypeUrl()), Value: b(string(v.GetValue()))})
	}
}

// flagFields are the boolean response flags by field number.
func flagFields(f *alsdata.ResponseFlags) map[int]bool {
	return map[int]bool{1: f.GetFailedLocalHealthcheck(), 2: f.GetNoHealthyUpstream(), 3: f.GetUpstreamRequestTimeout(), 4: f.GetLocalReset(),
		5: f.GetUpstreamRemoteReset(), 6: f.GetUpstreamConnectionFailure(), 7: f.GetUpstreamConnectionTermination(), 8: f.GetUpstreamOverflow(),
		9: f.GetNoRouteFound(), 10: f.GetDelayInjected(), 11: f.GetFaultInjected(), 12: f.GetRateLimited(), 14: f.GetRateLimitServiceError(),
		15: f.GetDownstreamConnectionTermination(), 16: f.GetUpstreamRetryLimitExceeded(), 17: f.GetStreamIdleTimeout(),
		18: f.GetInvalidEnvoyRequestHeaders(), 19: f.GetDownstreamProtocolError(), 20: f.GetUpstreamMaxStreamDurationReached(),
		21: f.GetResponseFromCacheFilter(), 22: f.GetNoFilterConfigFound(), 23: f.GetDurationTimeout(), 24: f.GetUpstreamProtocolError(),
		25: f.GetNoClusterFound(), 26: f.GetOverloadManager(), 27: f.GetDnsResolutionFailure(), 28: f.GetDownstreamRemoteReset()}
}

// normalize makes a reader's view comparable with expected: nil for empty
// slices, map entries deduplicated by key (last wins) and sorted, flag bits
// past the known ones dropped.
func normalize(e Entry) Entry {
	e.Request.Headers = dedup(e.Request.Headers)
	e.Response.Headers = dedup(e.Response.Headers)
	fs := map[string]FilterState{}
	for _, f := range e.FilterState {
		fs[string(f.Key)] = FilterState{Key: b(string(f.Key)), TypeURL: b(string(f.TypeURL)), Value: b(string(f.Value))}
	}
	e.FilterState = nil
	for _, k := range sortedKeys(fs) {
		e.FilterState = append(e.FilterState, fs[k])
	}
	e.ResponseFlags.Bits &= 1<<28 - 1
	e.need = 0
	nilIfEmpty(&e.UpstreamCluster, &e.RouteName, &e.TLS.SNI, &e.TLS.Local.FirstSAN, &e.TLS.Peer.FirstSAN, &e.Request.Scheme,
		&e.Request.Authority, &e.Request.Path, &e.Request.UserAgent, &e.Request.Referer, &e.Request.ForwardedFor,
		&e.Request.RequestID, &e.Request.OriginalPath, &e.Response.CodeDetails)
	for _, a := range []*Address{&e.DownstreamRemoteAddress, &e.DownstreamLocalAddress, &e.DownstreamDirectRemote, &e.UpstreamRemoteAddress, &e.UpstreamLocalAddress} {
		nilIfEmpty(&a.IP)
	}
	return e
}

func nilIfEmpty(bs ...*[]byte) {
	for _, p := range bs {
		if len(*p) == 0 {
			*p = nil
		} else {
			*p = []byte(string(*p))
		}
	}
}

func dedup(in []KV) []KV {
	m := map[string]string{}
	for _, kv := range in {
		m[string(kv.Key)] = string(kv.Value)
	}
	var out []KV
	for _, k := range sortedKeys(m) {
		out = append(out, KV{Key: b(k), Value: b(m[k])})
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := 1; i < len(ks); i++ {
		for j := i; j > 0 && ks[j] < ks[j-1]; j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
	return ks
}

// check parses raw with both readers and compares what they see. It
// reports whether the generated decoder accepted raw.
func check(t *testing.T, raw []byte) bool {
	t.Helper()
	var gen alsv3.StreamAccessLogsMessage
	genErr := proto.Unmarshal(raw, &gen)
	var m Message
	err := m.Parse(raw)
	entries := make([]Entry, 0, m.Len())
	if err == nil {
		for i := 0; i < m.Len(); i++ {
			var e Entry
			if err = m.Entry(i, &e); err != nil {
				break
			}
			entries = append(entries, normalize(e))
		}
	}
	if genErr != nil {
		return false // the reader may be more lenient (UTF-8, fields it skips)
	}
	require.NoError(t, err, "the generated decoder accepts what the reader refused")
	wantMsg, wantEntries := expected(&gen)
	got := m
	got.entries, got.warm = nil, 0
	nilIfEmpty(&got.LogName, &got.NodeID, &wantMsg.LogName, &wantMsg.NodeID)
	require.Equal(t, wantMsg, got)
	require.Len(t, entries, len(wantEntries))
	for i := range wantEntries {
		require.Equal(t, normalize(wantEntries[i]), entries[i], "entry %d", i)
	}
	return true
}

func seeds() [][]byte {
	full, _ := proto.Marshal(httpMessage(fullHTTPEntry(), &alsdata.HTTPAccessLogEntry{}))
	tcp, _ := proto.Marshal(&alsv3.StreamAccessLogsMessage{LogEntries: &alsv3.StreamAccessLogsMessage_TcpLogs{TcpLogs: &alsv3.StreamAccessLogsMessage_TCPAccessLogEntries{
		LogEntry: []*alsdata.TCPAccessLogEntry{{CommonProperties: fullCommon(), ConnectionProperties: &alsdata.ConnectionProperties{ReceivedBytes: 10, SentBytes: 20}}}}}})
	empty, _ := proto.Marshal(&alsv3.StreamAccessLogsMessage{})
	return [][]byte{full, tcp, empty, append(append([]byte{}, full...), tcp...), append(append([]byte{}, tcp...), full...), append(append([]byte{}, full...), full...)}
}

func TestReaderSeesWhatGeneratedCodeSees(t *testing.T) {
	for i, raw := range seeds() {
		require.True(t, check(t, raw), "seed %d", i)
	}
	var m Message
	require.NoError(t, m.Parse(seeds()[0]))
	require.Equal(t, ProtocolHTTP, m.Protocol)
	require.Equal(t, "http_envoy_accesslog", string(m.LogName))
	require.Equal(t, 2, m.Len())
	var e Entry
	require.NoError(t, m.Entry(0, &e))
	require.Equal(t, "/v1/damage?analytic=1", string(e.Request.Path))
	require.Equal(t, uint32(503), e.Response.Code)
	require.True(t, e.ResponseFlags.Has(2) && e.ResponseFlags.Has(19) && !e.ResponseFlags.Has(1) && e.ResponseFlags.Unauthorized)
	require.True(t, e.TLS.Local.FirstURI)
	require.False(t, e.UpstreamLocalAddress.Socket)
	require.NoError(t, m.Entry(1, &e))
	require.False(t, e.Common)
	require.False(t, e.Request.Present)
}

func TestMergeAndOneofRules(t *testing.T) {
	// A repeated common_properties merges; a pipe after a socket address
	// replaces it; http_logs then tcp_logs keeps the TCP entries only.
	c1, _ := proto.Marshal(&alsdata.HTTPAccessLogEntry{CommonProperties: &alsdata.AccessLogCommon{UpstreamCluster: "a", DownstreamLocalAddress: sockAddr("1.1.1.1", 1)}})
	c2, _ := proto.Marshal(&alsdata.HTTPAccessLogEntry{CommonProperties: &alsdata.AccessLogCommon{RouteName: "r",
		DownstreamLocalAddress: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "x"}}}}})
	entry := append(c1, c2...)
	var raw []byte
	raw = protowireAppendBytes(raw, 2, protowireAppendBytes(nil, 1, entry))
	require.True(t, check(t, raw))
	tcp, _ := proto.Marshal(&alsv3.StreamAccessLogsMessage{LogEntries: &alsv3.StreamAccessLogsMessage_TcpLogs{TcpLogs: &alsv3.StreamAccessLogsMessage_TCPAccessLogEntries{
		LogEntry: []*alsdata.TCPAccessLogEntry{{}}}}})
	require.True(t, check(t, append(raw, tcp...)))
}

func TestMalformed(t *testing.T) {
	full := seeds()[0]
	for _, raw := range [][]byte{full[:len(full)-1], {0x12, 0x05, 0x0a}, {0x00}, {0x0c}, {0x12, 0x02, 0x0a, 0x7f}} {
		var m Message
		err := m.Parse(raw)
		if err == nil {
			for i := 0; i < m.Len() && err == nil; i++ {
				var e Entry
				err = m.Entry(i, &e)
			}
		}
		require.ErrorIs(t, err, ErrMalformed, "%x", raw)
		var gen alsv3.StreamAccessLogsMessage
		require.Error(t, proto.Unmarshal(raw, &gen), "%x", raw)
	}
}

func TestReadingAllocatesNothing(t *testing.T) {
	raw := seeds()[0]
	var m Message
	var e Entry
	require.NoError(t, m.Parse(raw))
	require.NoError(t, m.Entry(0, &e))
	allocs := testing.AllocsPerRun(100, func() {
		_ = m.Parse(raw)
		for i := 0; i < m.Len(); i++ {
			_ = m.Entry(i, &e)
		}
	})
	require.Zero(t, allocs)
}

// FuzzEntry holds the reader to go-control-plane's generated decoder:
// whatever the generated code accepts, the reader accepts and sees the same.
// fuzz budget: 100000x
func FuzzEntry(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		check(t, raw)
	})
}

func protowireAppendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// BenchmarkReadEntries reads a message of 100 full HTTP entries in place;
// ns/entry is the reader's cost per entry.
func BenchmarkReadEntries(b *testing.B) {
	entries := make([]*alsdata.HTTPAccessLogEntry, 100)
	for i := range entries {
		entries[i] = fullHTTPEntry()
	}
	raw, err := proto.Marshal(httpMessage(entries...))
	require.NoError(b, err)
	var m Message
	var e Entry
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := m.Parse(raw); err != nil {
			b.Fatal(err)
		}
		for j := 0; j < m.Len(); j++ {
			if err := m.Entry(j, &e); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(entries)), "ns/entry")
}

// BenchmarkGeneratedUnmarshal is go-control-plane's generated decoder on the
// same message, for comparison.
func BenchmarkGeneratedUnmarshal(b *testing.B) {
	entries := make([]*alsdata.HTTPAccessLogEntry, 100)
	for i := range entries {
		entries[i] = fullHTTPEntry()
	}
	raw, err := proto.Marshal(httpMessage(entries...))
	require.NoError(b, err)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var m alsv3.StreamAccessLogsMessage
		if err := proto.Unmarshal(raw, &m); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(entries)), "ns/entry")
}

// TestNeedSkipsParts: parts not needed are left empty, the rest is read as
// with NeedAll.
func TestNeedSkipsParts(t *testing.T) {
	raw := seeds()[0]
	var m Message
	require.NoError(t, m.Parse(raw))
	var all, some Entry
	require.NoError(t, m.Entry(0, &all))
	require.NoError(t, m.EntryNeed(0, &some, NeedTLS|NeedRequestHeaders))
	require.True(t, some.TLS.Present)
	require.Equal(t, all.TLS, some.TLS)
	require.Equal(t, all.Request, some.Request)
	require.False(t, some.DownstreamLocalAddress.Present)
	require.False(t, some.StartTime.Present)
	require.False(t, some.ResponseFlags.Present)
	require.Empty(t, some.Response.Headers)
	require.Empty(t, some.FilterState)
	require.Equal(t, all.UpstreamCluster, some.UpstreamCluster)
	require.Equal(t, all.Response.Code, some.Response.Code)
	some.need = all.need
	some.DownstreamRemoteAddress, some.DownstreamLocalAddress, some.DownstreamDirectRemote = all.DownstreamRemoteAddress, all.DownstreamLocalAddress, all.DownstreamDirectRemote
	some.UpstreamRemoteAddress, some.UpstreamLocalAddress = all.UpstreamRemoteAddress, all.UpstreamLocalAddress
	some.StartTime, some.TimeToLastRxByte, some.TimeToFirstUpstreamTxByte, some.TimeToLastUpstreamTxByte = all.StartTime, all.TimeToLastRxByte, all.TimeToFirstUpstreamTxByte, all.TimeToLastUpstreamTxByte
	some.TimeToFirstUpstreamRxByte, some.TimeToLastUpstreamRxByte, some.TimeToFirstDownstreamTxByte = all.TimeToFirstUpstreamRxByte, all.TimeToLastUpstreamRxByte, all.TimeToFirstDownstreamTxByte
	some.TimeToLastDownstreamTxByte, some.Duration, some.ResponseFlags = all.TimeToLastDownstreamTxByte, all.Duration, all.ResponseFlags
	some.Response.Headers, some.FilterState = all.Response.Headers, all.FilterState
	require.Equal(t, all, some, "nothing else differs")
}

// TestV2Entries builds v2 entries with go-control-plane's v2 types
// (envoy.data.accesslog.v2, envoy.api.v2.core) and reads them with the same
// reader: the two versions share their field numbers.
func TestV2Entries(t *testing.T) {
	addr := &corev2.Address{Address: &corev2.Address_SocketAddress{SocketAddress: &corev2.SocketAddress{
		Address: "10.0.0.2", PortSpecifier: &corev2.SocketAddress_PortValue{PortValue: 9080}}}}
	msg := &alsv2.StreamAccessLogsMessage{
		Identifier: &alsv2.StreamAccessLogsMessage_Identifier{Node: &corev2.Node{Id: "sidecar~v2"}, LogName: "v2log"},
		LogEntries: &alsv2.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alsv2.StreamAccessLogsMessage_HTTPAccessLogEntries{
			LogEntry: []*alsdatav2.HTTPAccessLogEntry{{
				CommonProperties: &alsdatav2.AccessLogCommon{DownstreamLocalAddress: addr, UpstreamCluster: "outbound|9080||reviews.default.svc.cluster.local",
					StartTime: timestamppb.New(time.Unix(1700000000, 5)), ResponseFlags: &alsdatav2.ResponseFlags{UpstreamOverflow: true},
					TlsProperties: &alsdatav2.TLSProperties{TlsSniHostname: "sni", PeerCertificateProperties: &alsdatav2.TLSProperties_CertificateProperties{
						SubjectAltName: []*alsdatav2.TLSProperties_CertificateProperties_SubjectAltName{{San: &alsdatav2.TLSProperties_CertificateProperties_SubjectAltName_Uri{Uri: "spiffe://a/b"}}}}}},
				Request:  &alsdatav2.HTTPRequestProperties{RequestMethod: corev2.RequestMethod_PUT, Path: "/v1/damage?analytic=1", RequestHeaders: map[string]string{"content-type": "application/grpc"}},
				Response: &alsdatav2.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(201), ResponseBodyBytes: 7},
			}}}},
	}
	raw, err := proto.Marshal(msg)
	require.NoError(t, err)
	require.True(t, check(t, raw), "the v3 generated decoder reads v2 bytes too")
	var m Message
	require.NoError(t, m.Parse(raw))
	require.Equal(t, "v2log", string(m.LogName))
	require.Equal(t, "sidecar~v2", string(m.NodeID))
	var e Entry
	require.NoError(t, m.Entry(0, &e))
	require.Equal(t, ProtocolHTTP, e.Protocol)
	require.Equal(t, "/v1/damage?analytic=1", string(e.Request.Path))
	require.Equal(t, int32(corev2.RequestMethod_PUT), e.Request.Method)
	require.Equal(t, uint32(201), e.Response.Code)
	require.Equal(t, "10.0.0.2", string(e.DownstreamLocalAddress.IP))
	require.Equal(t, uint32(9080), e.DownstreamLocalAddress.Port)
	require.True(t, e.ResponseFlags.Has(8))
	require.Equal(t, "spiffe://a/b", string(e.TLS.Peer.FirstSAN))
	require.Equal(t, []KV{{Key: []byte("content-type"), Value: []byte("application/grpc")}}, e.Request.Headers)

	tcp, err := proto.Marshal(&alsv2.StreamAccessLogsMessage{LogEntries: &alsv2.StreamAccessLogsMessage_TcpLogs{TcpLogs: &alsv2.StreamAccessLogsMessage_TCPAccessLogEntries{
		LogEntry: []*alsdatav2.TCPAccessLogEntry{{ConnectionProperties: &alsdatav2.ConnectionProperties{ReceivedBytes: 3, SentBytes: 4}}}}}})
	require.NoError(t, err)
	require.NoError(t, m.Parse(tcp))
	require.NoError(t, m.Entry(0, &e))
	require.Equal(t, ProtocolTCP, e.Protocol)
	require.Equal(t, uint64(3), e.ReceivedBytes)
	require.Equal(t, uint64(4), e.SentBytes)
}
