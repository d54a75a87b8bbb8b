// Package accesslog sends Envoy access-log entries to meshmetrics' Access
// Log Service the way Envoy does: entries built with go-control-plane's
// types, encoded into StreamAccessLogsMessages, streamed on the v3 or v2
// method, and a load generator that streams pre-encoded messages. Tests,
// the test kit and the benchmark harness use it.
package accesslog

import (
	"context"
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv2 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v2"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The methods Envoy calls: v3, and v2 (Envoy up to 1.17, what Istio 1.7's
// Mixer served). The v2 and v3 messages share their field numbers.
const (
	MethodV3 = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"
	MethodV2 = "/envoy.service.accesslog.v2.AccessLogService/StreamAccessLogs"
)

// SocketAddress is an Envoy socket address.
func SocketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func uriSAN(uri string) *alsdata.TLSProperties_CertificateProperties {
	return &alsdata.TLSProperties_CertificateProperties{SubjectAltName: []*alsdata.TLSProperties_CertificateProperties_SubjectAltName{
		{San: &alsdata.TLSProperties_CertificateProperties_SubjectAltName_Uri{Uri: uri}}}}
}

// RealisticHTTPEntry is the i-th of a series of inbound HTTP entries as an
// Istio sidecar logs them (addresses, timings, cluster, flags, route, mutual
// TLS, request and response properties; about 600 bytes encoded), over
// three services, five paths (two of them analytic calls of /v1/damage)
// and the codes 200, 404 and 503.
func RealisticHTTPEntry(i int) *alsdata.HTTPAccessLogEntry {
	paths := []string{"/v1/damage?analytic=1", "/v1/damage", "/reviews/0", "/details/1", "/v1/damage?analytic=2"}
	services := []string{"reviews.default.svc.cluster.local", "ratings.default.svc.cluster.local", "details.default.svc.cluster.local"}
	svc := services[i%len(services)]
	return &alsdata.HTTPAccessLogEntry{
		CommonProperties: &alsdata.AccessLogCommon{
			SampleRate:                    1,
			DownstreamRemoteAddress:       SocketAddress("10.1.0.7", 45678),
			DownstreamLocalAddress:        SocketAddress("10.1.2.3", 9080),
			DownstreamDirectRemoteAddress: SocketAddress("10.1.0.7", 45678),
			UpstreamRemoteAddress:         SocketAddress("127.0.0.1", 9080),
			UpstreamLocalAddress:          SocketAddress("127.0.0.1", 51234),
			TlsProperties: &alsdata.TLSProperties{TlsVersion: alsdata.TLSProperties_TLSv1_3, TlsSniHostname: "outbound_.9080_._." + svc,
				LocalCertificateProperties: uriSAN("spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
				PeerCertificateProperties:  uriSAN("spiffe://cluster.local/ns/default/sa/bookinfo-productpage")},
			StartTime:                   timestamppb.New(time.Unix(1700000000+int64(i), 123456789)),
			TimeToLastRxByte:            durationpb.New(50 * time.Microsecond),
			TimeToFirstUpstreamTxByte:   durationpb.New(300 * time.Microsecond),
			TimeToLastUpstreamTxByte:    durationpb.New(310 * time.Microsecond),
			TimeToFirstUpstreamRxByte:   durationpb.New(4 * time.Millisecond),
			TimeToLastUpstreamRxByte:    durationpb.New(5 * time.Millisecond),
			TimeToFirstDownstreamTxByte: durationpb.New(4100 * time.Microsecond),
			TimeToLastDownstreamTxByte:  durationpb.New(5100 * time.Microsecond),
			UpstreamCluster:             "inbound|9080|http|" + svc,
			ResponseFlags:               &alsdata.ResponseFlags{},
			RouteName:                   "default",
		},
		ProtocolVersion: alsdata.HTTPAccessLogEntry_HTTP11,
		Request: &alsdata.HTTPRequestProperties{
			RequestMethod: corev3.RequestMethod_GET, Scheme: "http", Authority: svc + ":9080", Path: paths[i%len(paths)],
			UserAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36", RequestId: fmt.Sprintf("3f2a7c1e-1b2c-4d5e-8f90-%012d", i),
			ForwardedFor: "10.1.0.7", RequestHeadersBytes: 420,
		},
		Response: &alsdata.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32([]uint32{200, 200, 200, 404, 503}[i%5]),
			ResponseHeadersBytes: 180, ResponseBodyBytes: 2950, ResponseCodeDetails: "via_upstream"},
	}
}

// HTTPMessage is a message of HTTP entries; id, when set, is the stream's
// identifier (Envoy sends it in the first message only).
func HTTPMessage(id *alsv3.StreamAccessLogsMessage_Identifier, entries ...*alsdata.HTTPAccessLogEntry) *alsv3.StreamAccessLogsMessage {
	return &alsv3.StreamAccessLogsMessage{Identifier: id, LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{
		HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries}}}
}

// TCPMessage is a message of TCP entries.
func TCPMessage(id *alsv3.StreamAccessLogsMessage_Identifier, entries ...*alsdata.TCPAccessLogEntry) *alsv3.StreamAccessLogsMessage {
	return &alsv3.StreamAccessLogsMessage{Identifier: id, LogEntries: &alsv3.StreamAccessLogsMessage_TcpLogs{
		TcpLogs: &alsv3.StreamAccessLogsMessage_TCPAccessLogEntries{LogEntry: entries}}}
}

// V2 is m as the v2 message Envoy 1.17 and earlier send
// (envoy.service.accesslog.v2, go-control-plane's v2 types): the same
// fields, with the same numbers, decoded by the v2 generated code.
func V2(m *alsv3.StreamAccessLogsMessage) (*alsv2.StreamAccessLogsMessage, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out alsv2.StreamAccessLogsMessage
	if err := proto.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RealisticMessages encodes n messages of size realistic HTTP entries each.
func RealisticMessages(n, size int) ([][]byte, error) {
	var out [][]byte
	for m := 0; m < n; m++ {
		entries := make([]*alsdata.HTTPAccessLogEntry, size)
		for i := range entries {
			entries[i] = RealisticHTTPEntry(m*size + i)
		}
		raw, err := proto.Marshal(HTTPMessage(nil, entries...))
		if err != nil {
			return nil, err
		}
		out = append(out, raw)
	}
	return out, nil
}

// Raw is a message already encoded, sent as it is.
type Raw []byte

// rawCodec sends Raw bytes unchanged and reads replies with protobuf-go.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *Raw:
		return mem.BufferSlice{mem.SliceBuffer(*m)}, nil
	case proto.Message:
		b, err := proto.Marshal(m)
		return mem.BufferSlice{mem.SliceBuffer(b)}, err
	}
	return nil, fmt.Errorf("accesslog: cannot send %T", v)
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("accesslog: cannot read %T", v)
	}
	return proto.Unmarshal(data.Materialize(), m)
}

var _ encoding.CodecV2 = rawCodec{}

// Stream is one StreamAccessLogs stream.
type Stream struct {
	st grpc.ClientStream
}

// Open starts a stream on method (MethodV3 or MethodV2) over conn.
func Open(ctx context.Context, conn *grpc.ClientConn, method string) (*Stream, error) {
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{StreamName: "StreamAccessLogs", ClientStreams: true}, method,
		grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		return nil, err
	}
	return &Stream{st: st}, nil
}

// Send sends a message built with go-control-plane's types (v3, or v2 from
// V2).
func (s *Stream) Send(m proto.Message) error { return s.st.SendMsg(m) }

// SendRaw sends an encoded message.
func (s *Stream) SendRaw(b []byte) error {
	r := Raw(b)
	return s.st.SendMsg(&r)
}

// Close ends the stream as Envoy does when it stops and waits for the
// server's answer, which comes once every message sent is processed.
func (s *Stream) Close() error {
	if err := s.st.CloseSend(); err != nil {
		return err
	}
	return s.st.RecvMsg(&alsv3.StreamAccessLogsResponse{})
}
