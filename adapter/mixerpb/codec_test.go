package mixerpb_test

import (
	"context"
	"net"
	"testing"

	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv2 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v2"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/gogo/protobuf/types"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/golden"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/modelpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
)

// goldenRequest is the message that testdata/golden/handlemetric-analyticcounter.hex
// encodes. The params bytes are taken verbatim from the golden file because
// Mixer writes them in sorted-key order, which no generated marshaller does.
func goldenRequest(t *testing.T, raw []byte) *metricpb.HandleMetricRequest {
	var decoded metricpb.HandleMetricRequest
	require.NoError(t, decoded.Unmarshal(raw))
	return &metricpb.HandleMetricRequest{
		Instances: []*metricpb.InstanceMsg{{
			Name:  "analyticcounter.instance.istio-system",
			Value: &policypb.Value{Value: &policypb.Value_Int64Value{Int64Value: 1}},
			Dimensions: map[string]*policypb.Value{
				"path": {Value: &policypb.Value_StringValue{StringValue: "/v1/damage"}},
			},
		}},
		AdapterConfig: &types.Any{
			TypeUrl: "type.googleapis.com/adapter.meshmetrics.config.Params",
			Value:   decoded.AdapterConfig.Value,
		},
		DedupId: "42",
	}
}

func TestGeneratedCodeWritesMixerLayout(t *testing.T) {
	raw, err := golden.ReadHex("handlemetric-analyticcounter.hex")
	require.NoError(t, err)
	msg := goldenRequest(t, raw)

	generated, err := msg.Marshal()
	require.NoError(t, err)
	require.Equal(t, raw, generated, "gogo Marshal must write fields in number order with name last")

	viaCodec, err := mixerpb.Codec{}.Marshal(msg)
	require.NoError(t, err)
	require.Equal(t, raw, viaCodec.Materialize())

	var back metricpb.HandleMetricRequest
	require.NoError(t, mixerpb.Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, &back))
	require.Equal(t, msg.Instances[0].Name, back.Instances[0].Name)
	require.Equal(t, "/v1/damage", back.Instances[0].Dimensions["path"].GetStringValue())
}

// sentinel implements GeneratedMessage with an encoding no reflection-based
// marshaller could produce: if the codec's output is the sentinel, the codec
// called the generated methods.
type sentinel struct{ unmarshalled []byte }

func (sentinel) Size() int { return 3 }
func (sentinel) MarshalToSizedBuffer(b []byte) (int, error) {
	copy(b, []byte{0xde, 0xad, 0x01})
	return 3, nil
}
func (s *sentinel) Unmarshal(b []byte) error {
	s.unmarshalled = append([]byte(nil), b...)
	return nil
}

func TestCodecCallsGeneratedMethodsAndNothingElse(t *testing.T) {
	out, err := mixerpb.Codec{}.Marshal(&sentinel{})
	require.NoError(t, err)
	require.Equal(t, []byte{0xde, 0xad, 0x01}, out.Materialize())

	var s sentinel
	require.NoError(t, mixerpb.Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{7, 8})}, &s))
	require.Equal(t, []byte{7, 8}, s.unmarshalled)

	// protobuf-go messages (the health service's) use their own generated code.
	out, err = mixerpb.Codec{}.Marshal(&wrapperspb.StringValue{Value: "x"})
	require.NoError(t, err)
	require.Equal(t, []byte{0x0a, 0x01, 'x'}, out.Materialize())

	// Anything else is refused rather than marshalled by reflection.
	type plain struct{ A string }
	_, err = mixerpb.Codec{}.Marshal(&plain{A: "x"})
	require.ErrorContains(t, err, "not a generated protobuf message")
	require.Error(t, mixerpb.Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(nil)}, &plain{}))
}

// rawBytes is what Mixer's bytes-out-proto-in-codec sends: pre-encoded bytes.
type rawBytes []byte

type passthroughCodec struct{}

func (passthroughCodec) Name() string { return "proto" }
func (passthroughCodec) Marshal(v any) ([]byte, error) {
	return []byte(*v.(*rawBytes)), nil
}
func (passthroughCodec) Unmarshal(b []byte, v any) error {
	return v.(*modelpb.ReportResult).Unmarshal(b)
}

type recordingService struct {
	got chan *metricpb.HandleMetricRequest
}

func (s recordingService) HandleMetric(_ context.Context, req *metricpb.HandleMetricRequest) (*modelpb.ReportResult, error) {
	s.got <- req
	return &modelpb.ReportResult{}, nil
}

// TestServerDecodesMixerBytesWithCodec sends the golden bytes the way Mixer
// does (a pass-through codec) to a server that uses Codec, over real gRPC.
func TestServerDecodesMixerBytesWithCodec(t *testing.T) {
	raw, err := golden.ReadHex("handlemetric-analyticcounter.hex")
	require.NoError(t, err)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer(grpc.ForceServerCodecV2(mixerpb.Codec{}))
	svc := recordingService{got: make(chan *metricpb.HandleMetricRequest, 1)}
	metricpb.RegisterHandleMetricServiceServer(srv, svc)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()

	payload := rawBytes(raw)
	var reply modelpb.ReportResult
	err = conn.Invoke(context.Background(), "/metric.HandleMetricService/HandleMetric", &payload, &reply,
		grpc.ForceCodec(passthroughCodec{}))
	require.NoError(t, err)
	got := <-svc.got
	require.Len(t, got.Instances, 1)
	require.Equal(t, "analyticcounter.instance.istio-system", got.Instances[0].Name)
	require.Equal(t, int64(1), got.Instances[0].Value.GetInt64Value())
	require.Equal(t, "42", got.DedupId)
}

// TestCodecCarriesAccessLogMessages: Envoy's Access Log Service messages
// (protobuf-go generated, go-control-plane) go through their generated
// code, v3 and v2 alike; the in-place hook receives the bytes unchanged.
func TestCodecCarriesAccessLogMessages(t *testing.T) {
	msg := &alsv3.StreamAccessLogsMessage{Identifier: &alsv3.StreamAccessLogsMessage_Identifier{LogName: "als"},
		LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{
			LogEntry: []*alsdata.HTTPAccessLogEntry{{Request: &alsdata.HTTPRequestProperties{Path: "/x"}}}}}}
	out, err := mixerpb.Codec{}.Marshal(msg)
	require.NoError(t, err)
	want, err := proto.Marshal(msg)
	require.NoError(t, err)
	require.Equal(t, want, out.Materialize())

	var v2 alsv2.StreamAccessLogsMessage
	require.NoError(t, mixerpb.Codec{}.Unmarshal(out, &v2))
	require.Equal(t, "/x", v2.GetHttpLogs().GetLogEntry()[0].GetRequest().GetPath(), "v2 and v3 share field numbers")
	require.Equal(t, "als", v2.GetIdentifier().GetLogName())

	var raw keptBytes
	require.NoError(t, mixerpb.Codec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(want)}, &raw))
	require.Equal(t, want, raw.b)

	resp, err := mixerpb.Codec{}.Marshal(&alsv3.StreamAccessLogsResponse{})
	require.NoError(t, err)
	require.Empty(t, resp.Materialize())
}

// keptBytes uses the codec's in-place hook, as the access-log service does.
type keptBytes struct{ b []byte }

func (k *keptBytes) UnmarshalBuffers(data mem.BufferSlice) error {
	k.b = data.Materialize()
	return nil
}
