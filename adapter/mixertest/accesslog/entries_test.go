package accesslog_test

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest/accesslog"
)

var now = time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)

func TestParseEntries(t *testing.T) {
	entries, err := accesslog.ParseEntries("e.yaml", []byte(`
defaults:
  destination: 10.1.2.3:9080
  upstream_cluster: inbound|9080|http|reviews.default.svc.cluster.local
  path: /default
entries:
- method: post
  path: /v1/damage?analytic=1
  authority: reviews:9080
  code: 503
  request_headers: {x-user: alice, content-type: application/grpc}
  response_headers: {server: envoy}
  request_body_bytes: 10
  request_headers_bytes: 20
  response_body_bytes: 30
  response_headers_bytes: 40
  user_agent: curl/8
  referer: http://example.com/
  request_id: abc
  scheme: https
  response_code_details: via_upstream
  source: "[fd00::1]:40000"
  upstream: 127.0.0.1:9080
  route_name: default
  start_time: 2024-01-02T03:04:05.5Z
  duration: 12ms
  time_to_first_upstream_rx_byte: 1.5s
  response_flags: [UO, UAEX, DC]
  tls: {sni: outbound_.9080_._.reviews, local_san: spiffe://cluster.local/ns/default/sa/reviews, peer_san: dns:productpage}
  source_peer: {WORKLOAD_NAME: productpage-v1, NAMESPACE: default}
  destination_peer: {WORKLOAD_NAME: reviews-v2, NAMESPACE: default}
- {}
- protocol: tcp
  sent_bytes: 1024
  received_bytes: 128
  upstream_cluster: outbound|3306||mysql.db.svc.cluster.local
  repeat: 2
`), now)
	require.NoError(t, err)
	require.Len(t, entries, 4)

	h := entries[0].HTTP
	require.NotNil(t, h)
	require.Equal(t, 7, entries[0].Line)
	require.Equal(t, "e.yaml", entries[0].File)
	c := h.GetCommonProperties()
	require.Equal(t, "10.1.2.3", c.GetDownstreamLocalAddress().GetSocketAddress().GetAddress())
	require.Equal(t, uint32(9080), c.GetDownstreamLocalAddress().GetSocketAddress().GetPortValue())
	require.Equal(t, "fd00::1", c.GetDownstreamDirectRemoteAddress().GetSocketAddress().GetAddress())
	require.True(t, proto.Equal(c.GetDownstreamDirectRemoteAddress(), c.GetDownstreamRemoteAddress()))
	require.Equal(t, "127.0.0.1", c.GetUpstreamRemoteAddress().GetSocketAddress().GetAddress())
	require.Equal(t, "inbound|9080|http|reviews.default.svc.cluster.local", c.GetUpstreamCluster(), "from the defaults")
	require.Equal(t, "default", c.GetRouteName())
	require.Equal(t, time.Date(2024, 1, 2, 3, 4, 5, 5e8, time.UTC), c.GetStartTime().AsTime())
	require.Equal(t, 12*time.Millisecond, c.GetTimeToLastDownstreamTxByte().AsDuration())
	require.Equal(t, 12*time.Millisecond, c.GetDuration().AsDuration())
	require.Equal(t, 1500*time.Millisecond, c.GetTimeToFirstUpstreamRxByte().AsDuration())
	require.True(t, c.GetResponseFlags().GetUpstreamOverflow())
	require.True(t, c.GetResponseFlags().GetDownstreamConnectionTermination())
	require.Equal(t, alsdata.ResponseFlags_Unauthorized_EXTERNAL_SERVICE, c.GetResponseFlags().GetUnauthorizedDetails().GetReason())
	require.False(t, c.GetResponseFlags().GetNoRouteFound())
	require.Equal(t, "outbound_.9080_._.reviews", c.GetTlsProperties().GetTlsSniHostname())
	require.Equal(t, "spiffe://cluster.local/ns/default/sa/reviews", c.GetTlsProperties().GetLocalCertificateProperties().GetSubjectAltName()[0].GetUri())
	require.Equal(t, "productpage", c.GetTlsProperties().GetPeerCertificateProperties().GetSubjectAltName()[0].GetDns())
	var peer structpb.Struct
	require.NoError(t, c.GetFilterStateObjects()["downstream_peer"].UnmarshalTo(&peer))
	require.Equal(t, "productpage-v1", peer.GetFields()["WORKLOAD_NAME"].GetStringValue())
	require.NoError(t, c.GetFilterStateObjects()["upstream_peer"].UnmarshalTo(&peer))
	require.Equal(t, "reviews-v2", peer.GetFields()["WORKLOAD_NAME"].GetStringValue())
	r := h.GetRequest()
	require.Equal(t, corev3.RequestMethod_POST, r.GetRequestMethod())
	require.Equal(t, "https", r.GetScheme())
	require.Equal(t, "reviews:9080", r.GetAuthority())
	require.Equal(t, "/v1/damage?analytic=1", r.GetPath())
	require.Equal(t, "curl/8", r.GetUserAgent())
	require.Equal(t, "http://example.com/", r.GetReferer())
	require.Equal(t, "abc", r.GetRequestId())
	require.Equal(t, map[string]string{"x-user": "alice", "content-type": "application/grpc"}, r.GetRequestHeaders())
	require.Equal(t, uint64(10), r.GetRequestBodyBytes())
	require.Equal(t, uint64(20), r.GetRequestHeadersBytes())
	resp := h.GetResponse()
	require.Equal(t, uint32(503), resp.GetResponseCode().GetValue())
	require.Equal(t, map[string]string{"server": "envoy"}, resp.GetResponseHeaders())
	require.Equal(t, uint64(30), resp.GetResponseBodyBytes())
	require.Equal(t, uint64(40), resp.GetResponseHeadersBytes())
	require.Equal(t, "via_upstream", resp.GetResponseCodeDetails())

	// An entry of nothing but defaults: what a sidecar always logs.
	d := entries[1].HTTP
	require.Equal(t, corev3.RequestMethod_GET, d.GetRequest().GetRequestMethod())
	require.Equal(t, "http", d.GetRequest().GetScheme())
	require.Equal(t, "/default", d.GetRequest().GetPath(), "from the defaults")
	require.Equal(t, uint32(200), d.GetResponse().GetResponseCode().GetValue())
	require.Equal(t, now, d.GetCommonProperties().GetStartTime().AsTime())
	require.NotNil(t, d.GetCommonProperties().GetResponseFlags(), "no flag set: context.proxy_error_code is -")
	require.Nil(t, d.GetCommonProperties().GetTlsProperties())
	require.Empty(t, d.GetRequest().GetAuthority())

	for _, e := range entries[2:] {
		require.NotNil(t, e.TCP)
		require.Equal(t, uint64(1024), e.TCP.GetConnectionProperties().GetSentBytes())
		require.Equal(t, uint64(128), e.TCP.GetConnectionProperties().GetReceivedBytes())
		require.Equal(t, "outbound|3306||mysql.db.svc.cluster.local", e.TCP.GetCommonProperties().GetUpstreamCluster())
		require.Equal(t, "10.1.2.3", e.TCP.GetCommonProperties().GetDownstreamLocalAddress().GetSocketAddress().GetAddress())
	}
	require.NotSame(t, entries[2].TCP, entries[3].TCP, "repeated entries are copies")
	require.Nil(t, entries[2].HTTP, "the defaults' HTTP fields (path) do not apply to TCP entries")

	require.Equal(t, "HTTP POST reviews:9080/v1/damage?analytic=1 -> 503, 2 request headers, [fd00::1]:40000 -> 10.1.2.3:9080, "+
		"cluster inbound|9080|http|reviews.default.svc.cluster.local, 12ms, flags DC,UAEX,UO, downstream_peer productpage-v1, upstream_peer reviews-v2",
		accesslog.Describe(entries[0]))
	require.Equal(t, "TCP sent 1024 received 128 bytes, - -> 10.1.2.3:9080, cluster outbound|3306||mysql.db.svc.cluster.local", accesslog.Describe(entries[2]))
}

func TestParseEntriesBareList(t *testing.T) {
	entries, err := accesslog.ParseEntries("e.json", []byte(`[{"path": "/a"}, {"protocol": "tcp", "sent_bytes": 1}]`), now)
	require.NoError(t, err)
	require.Len(t, entries, 2)
	require.Equal(t, "/a", entries[0].HTTP.GetRequest().GetPath())
	require.Equal(t, uint64(1), entries[1].TCP.GetConnectionProperties().GetSentBytes())
	entries, err = accesslog.ParseEntries("e.json", []byte(`[{}]`), now)
	require.NoError(t, err)
	require.Equal(t, "/", entries[0].HTTP.GetRequest().GetPath(), "the default path")
}

func TestParseEntriesErrors(t *testing.T) {
	cases := []struct{ doc, want string }{
		{"", "e.yaml: no entries"},
		{"x: 1\n", `e.yaml:1: unknown key "x" (want entries, defaults)`},
		{"defaults: {}\n", "e.yaml: no entries"},
		{"entries: 5\n", "e.yaml:1: want a list of entries"},
		{"entries: []\n", "e.yaml:1: want a list of entries"},
		{"defaults: [1]\nentries: [{}]\n", "e.yaml:1: defaults: want a mapping"},
		{"- 5\n", "e.yaml:1: an entry must be a mapping"},
		{"- {protocol: udp}\n", `e.yaml:1: protocol: want http or tcp, got "udp"`},
		{"- {method: FETCH}\n", `e.yaml:1: method: unknown method "FETCH"`},
		{"- {code: ok}\n", `e.yaml:1: code: want a whole number, got "ok"`},
		{"- {code: -1}\n", `e.yaml:1: code: want a whole number >= 0, got "-1"`},
		{"- {code: 1000}\n", "e.yaml:1: code: 1000 is not an HTTP status code"},
		{"- {source: 10.0.0.1}\n", `e.yaml:1: source: want ip:port, got "10.0.0.1"`},
		{"- {destination: 10.0.0.1:http}\n", `e.yaml:1: destination: want ip:port, got "10.0.0.1:http"`},
		{"- {duration: 12}\n", `e.yaml:1: duration: want a duration such as 12ms, got "12"`},
		{"- {start_time: yesterday}\n", `e.yaml:1: start_time: parsing time "yesterday"`},
		{"- {response_flags: [XX]}\n", `e.yaml:1: response_flags: unknown code "XX" (want one of DC, DF, DI, DPE`},
		{"- {tls: {sn: x}}\n", `e.yaml:1: tls: unknown key "sn" (want sni, local_san, peer_san)`},
		{"- {request_headers: [a]}\n", "e.yaml:1: request_headers: want a mapping"},
		{"- {protocol: tcp, path: /}\n", "e.yaml:1: path: a tcp entry has no path (an HTTP field)"},
		{"- {sent_bytes: 1}\n", "e.yaml:1: sent_bytes: an http entry has no sent_bytes (a TCP field: set protocol: tcp)"},
		{"- {colour: red}\n", `e.yaml:1: colour: unknown key "colour" (want one of protocol, repeat,`},
		{"- {repeat: 0}\n", "e.yaml:1: repeat: want 1 to 1000000, got 0"},
		{"- {path: /a}\n- {path: [x]}\n- {code: x}\n", "e.yaml:2: path: want a string\ne.yaml:3: code: want a whole number"},
		{"- {path: /a\n", "e.yaml: invalid YAML"},
	}
	for _, c := range cases {
		_, err := accesslog.ParseEntries("e.yaml", []byte(c.doc), now)
		require.ErrorContains(t, err, c.want, c.doc)
	}
}

func TestMessages(t *testing.T) {
	h := &alsdata.HTTPAccessLogEntry{}
	tcp := &alsdata.TCPAccessLogEntry{}
	entries := append(append(accesslog.HTTP(h, h, h), accesslog.TCP(tcp)...), accesslog.HTTP(h)...)
	id := accesslog.Identifier("sidecar~10.0.0.1~a.default~default.svc.cluster.local", "a.default", "mockmixer")
	msgs := accesslog.Messages(id, entries, 2)
	require.Len(t, msgs, 4, "2 HTTP, 1 HTTP, 1 TCP, 1 HTTP: a message holds one protocol")
	require.Len(t, msgs[0].GetHttpLogs().GetLogEntry(), 2)
	require.Len(t, msgs[1].GetHttpLogs().GetLogEntry(), 1)
	require.Len(t, msgs[2].GetTcpLogs().GetLogEntry(), 1)
	require.Len(t, msgs[3].GetHttpLogs().GetLogEntry(), 1)
	require.Equal(t, "mockmixer", msgs[0].GetIdentifier().GetLogName(), "the identifier comes first")
	for _, m := range msgs[1:] {
		require.Nil(t, m.GetIdentifier())
	}
	require.Len(t, accesslog.Messages(nil, entries, 0), 3)
	require.Empty(t, accesslog.Messages(id, nil, 0))
}
