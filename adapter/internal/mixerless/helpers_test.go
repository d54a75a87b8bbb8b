package mixerless_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// configDir copies the testdata config (Istio's standard instances and
// rules, the analytic counter) into a fresh directory and adds handler.
func configDir(t testing.TB, handler string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"standard.yaml", "analyticcounter.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", "istio", f))
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "istio"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "istio", f), b, 0o600))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "handlers.yaml"), []byte(handler), 0o600))
	return dir
}

// handlers is the meshmetrics handler of Istio's standard metrics and the
// analyticprom sample, remote-writing to rw when it is set.
func handlers(rw string) string {
	remote := ""
	if rw != "" {
		remote = fmt.Sprintf("\n      remote_write: {url: %q, interval: 300ms, replica_label: replica}", rw)
	}
	return fmt.Sprintf(`apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: prometheus, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "meshmetrics.istio-system:50000"}
  params:
    prometheus:%s
    metrics:
    - name: requests_total
      instance_name: requestcount.instance.istio-system
      kind: COUNTER
      label_names: [reporter, source_workload, destination_service, destination_service_name, destination_service_namespace, request_protocol, response_code, response_flags]
    - name: tcp_sent_bytes_total
      instance_name: tcpbytesent.instance.istio-system
      kind: COUNTER
      label_names: [destination_service, source_workload]
    - name: tcp_received_bytes_total
      instance_name: tcpbytereceived.instance.istio-system
      kind: COUNTER
      label_names: [destination_service, source_workload]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: analyticprom, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "meshmetrics.istio-system:50000"}
  params:
    prometheus: {}
    metrics:
    - name: analytic_requests
      instance_name: analyticcounter.instance.istio-system
      kind: COUNTER
      label_names: [request_path, request_method, response_code, destination_service, source_workload]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: analyticprom, namespace: istio-system}
spec:
  match: match(request.path, "/v1/damage?analytic=*")
  actions:
  - handler: analyticprom
    instances: [analyticcounter]
`, remote)
}

func sock(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// httpEntry is an inbound HTTP entry of a request to service (a host in
// the cluster) answered with code.
func httpEntry(service, path string, code uint32, method corev3.RequestMethod, flags *alsdata.ResponseFlags) *alsdata.HTTPAccessLogEntry {
	return &alsdata.HTTPAccessLogEntry{
		CommonProperties: &alsdata.AccessLogCommon{
			DownstreamLocalAddress: sock("10.0.0.2", 9080), DownstreamDirectRemoteAddress: sock("10.0.0.1", 40000),
			StartTime: timestamppb.New(time.Unix(1700000000, 0)), TimeToLastDownstreamTxByte: durationpb.New(20 * time.Millisecond),
			UpstreamCluster: "inbound|9080|http|" + service, ResponseFlags: flags,
		},
		Request:  &alsdata.HTTPRequestProperties{RequestMethod: method, Authority: service + ":9080", Path: path, UserAgent: "test", Scheme: "http"},
		Response: &alsdata.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(code), ResponseBodyBytes: 10},
	}
}

func tcpEntry(service string, sent, received uint64) *alsdata.TCPAccessLogEntry {
	return &alsdata.TCPAccessLogEntry{
		CommonProperties:     &alsdata.AccessLogCommon{DownstreamLocalAddress: sock("10.0.0.2", 3306), UpstreamCluster: "outbound|3306||" + service},
		ConnectionProperties: &alsdata.ConnectionProperties{SentBytes: sent, ReceivedBytes: received},
	}
}

func httpMessage(first bool, entries ...*alsdata.HTTPAccessLogEntry) *alsv3.StreamAccessLogsMessage {
	m := &alsv3.StreamAccessLogsMessage{LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{
		HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries}}}
	if first {
		m.Identifier = &alsv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "sidecar~10.0.0.2~reviews"}, LogName: "als"}
	}
	return m
}

func tcpMessage(entries ...*alsdata.TCPAccessLogEntry) *alsv3.StreamAccessLogsMessage {
	return &alsv3.StreamAccessLogsMessage{LogEntries: &alsv3.StreamAccessLogsMessage_TcpLogs{
		TcpLogs: &alsv3.StreamAccessLogsMessage_TCPAccessLogEntries{LogEntry: entries}}}
}

// alsStream opens a StreamAccessLogs stream on method (envoyals.MethodV3 or
// MethodV2). send converts messages for a v2 stream to go-control-plane's
// v2 types (accesslog.V2).
func alsStream(t testing.TB, ctx context.Context, addr, method string) (grpc.ClientStream, func() error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{StreamName: "StreamAccessLogs", ClientStreams: true}, method)
	require.NoError(t, err)
	return st, func() error {
		if err := st.CloseSend(); err != nil {
			return err
		}
		return st.RecvMsg(&alsv3.StreamAccessLogsResponse{})
	}
}

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// metricLines returns the lines of a /metrics text that start with name{
// or name followed by a space.
func metricLines(text, name string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, name+"{") || strings.HasPrefix(l, name+" ") {
			out = append(out, l)
		}
	}
	return out
}
