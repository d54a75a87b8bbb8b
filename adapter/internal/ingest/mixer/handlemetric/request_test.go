package handlemetric_test

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/gogo/protobuf/types"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/golden"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
)

func TestParseGoldenMixerRequest(t *testing.T) {
	raw, err := golden.ReadHex("handlemetric-analyticcounter.hex")
	require.NoError(t, err)

	var r handlemetric.Request
	require.NoError(t, r.Parse(raw))
	require.Equal(t, 1, r.NumInstances())
	require.True(t, r.AdapterConfig.Present)
	require.Equal(t, "type.googleapis.com/adapter.meshmetrics.config.Params", string(r.AdapterConfig.TypeURL))
	require.Len(t, r.AdapterConfig.Value, 66)
	require.Equal(t, "42", string(r.DedupID))

	var in handlemetric.Instance
	require.NoError(t, r.Instance(0, &in))
	require.Equal(t, "analyticcounter.instance.istio-system", string(in.Name))
	require.Equal(t, handlemetric.Value{Kind: handlemetric.KindInt64, Int: 1}, in.Value)
	require.Len(t, in.Dimensions, 1)
	require.Equal(t, "path", string(in.Dimensions[0].Key))
	require.Equal(t, handlemetric.KindString, in.Dimensions[0].Value.Kind)
	require.Equal(t, "/v1/damage", string(in.Dimensions[0].Value.Bytes))
}

func TestParseRejectsMalformedInput(t *testing.T) {
	raw, err := golden.ReadHex("handlemetric-analyticcounter.hex")
	require.NoError(t, err)
	tests := []struct {
		name string
		data []byte
	}{
		{"truncated", raw[:len(raw)-3]},
		{"truncated inside instance", raw[:20]},
		{"bad tag", []byte{0x00, 0x01}},
		{"instances as varint", []byte{0x08, 0x01}},
		{"length past end", []byte{0x0a, 0x7f, 0x00}},
		{"overlong varint", []byte{0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r handlemetric.Request
			err := r.Parse(tc.data)
			if err == nil {
				// Framing was fine at the top level: the instance must fail.
				var in handlemetric.Instance
				for i := 0; i < r.NumInstances() && err == nil; i++ {
					err = r.Instance(i, &in)
				}
			}
			require.ErrorIs(t, err, handlemetric.ErrMalformed)
		})
	}
}

// view is a comparable rendering of a request, built from either decoder.
type view struct {
	Config    *[2]string
	DedupID   string
	Instances []instView
}

type instView struct {
	Name  string
	Value valView
	Dims  map[string]valView
}

type valView struct {
	Kind  handlemetric.Kind
	Bytes string
	Int   int64
	Nanos int32
	Bits  uint64
	Map   map[string]string
}

func fromGogoValue(v *policypb.Value) valView {
	if v == nil {
		return valView{}
	}
	switch m := v.Value.(type) {
	case *policypb.Value_StringValue:
		return valView{Kind: handlemetric.KindString, Bytes: m.StringValue}
	case *policypb.Value_Int64Value:
		return valView{Kind: handlemetric.KindInt64, Int: m.Int64Value}
	case *policypb.Value_DoubleValue:
		return valView{Kind: handlemetric.KindDouble, Bits: math.Float64bits(m.DoubleValue)}
	case *policypb.Value_BoolValue:
		b := int64(0)
		if m.BoolValue {
			b = 1
		}
		return valView{Kind: handlemetric.KindBool, Int: b}
	case *policypb.Value_IpAddressValue:
		if m.IpAddressValue == nil {
			return valView{Kind: handlemetric.KindIPAddress}
		}
		return valView{Kind: handlemetric.KindIPAddress, Bytes: string(m.IpAddressValue.Value)}
	case *policypb.Value_TimestampValue:
		out := valView{Kind: handlemetric.KindTimestamp}
		if m.TimestampValue != nil && m.TimestampValue.Value != nil {
			out.Int, out.Nanos = m.TimestampValue.Value.Seconds, m.TimestampValue.Value.Nanos
		}
		return out
	case *policypb.Value_DurationValue:
		out := valView{Kind: handlemetric.KindDuration}
		if m.DurationValue != nil && m.DurationValue.Value != nil {
			out.Int, out.Nanos = m.DurationValue.Value.Seconds, m.DurationValue.Value.Nanos
		}
		return out
	case *policypb.Value_EmailAddressValue:
		if m.EmailAddressValue == nil {
			return valView{Kind: handlemetric.KindEmail}
		}
		return valView{Kind: handlemetric.KindEmail, Bytes: m.EmailAddressValue.Value}
	case *policypb.Value_DnsNameValue:
		if m.DnsNameValue == nil {
			return valView{Kind: handlemetric.KindDNSName}
		}
		return valView{Kind: handlemetric.KindDNSName, Bytes: m.DnsNameValue.Value}
	case *policypb.Value_UriValue:
		if m.UriValue == nil {
			return valView{Kind: handlemetric.KindURI}
		}
		return valView{Kind: handlemetric.KindURI, Bytes: m.UriValue.Value}
	case *policypb.Value_StringMapValue:
		out := valView{Kind: handlemetric.KindStringMap, Map: map[string]string{}}
		if m.StringMapValue != nil {
			for k, v := range m.StringMapValue.Value {
				out.Map[k] = v
			}
		}
		return out
	}
	return valView{}
}

func fromWireValue(t testing.TB, v handlemetric.Value) valView {
	out := valView{Kind: v.Kind}
	switch v.Kind {
	case handlemetric.KindString, handlemetric.KindIPAddress, handlemetric.KindEmail, handlemetric.KindDNSName, handlemetric.KindURI:
		out.Bytes = string(v.Bytes)
	case handlemetric.KindInt64, handlemetric.KindBool:
		out.Int = v.Int
	case handlemetric.KindTimestamp, handlemetric.KindDuration:
		out.Int, out.Nanos = v.Int, v.Nanos
	case handlemetric.KindDouble:
		out.Bits = math.Float64bits(v.Float)
	case handlemetric.KindStringMap:
		out.Map = map[string]string{}
		require.NoError(t, handlemetric.StringMapEntries(v.Bytes, func(k, val []byte) { out.Map[string(k)] = string(val) }))
	}
	return out
}

func fromGogo(r *metricpb.HandleMetricRequest) view {
	out := view{DedupID: r.DedupId}
	if r.AdapterConfig != nil {
		out.Config = &[2]string{r.AdapterConfig.TypeUrl, string(r.AdapterConfig.Value)}
	}
	for _, in := range r.Instances {
		iv := instView{Name: in.Name, Value: fromGogoValue(in.Value), Dims: map[string]valView{}}
		for k, v := range in.Dimensions {
			iv.Dims[k] = fromGogoValue(v)
		}
		out.Instances = append(out.Instances, iv)
	}
	return out
}

func fromWire(t testing.TB, data []byte) (view, error) {
	var r handlemetric.Request
	if err := r.Parse(data); err != nil {
		return view{}, err
	}
	out := view{DedupID: string(r.DedupID)}
	if r.AdapterConfig.Present {
		out.Config = &[2]string{string(r.AdapterConfig.TypeURL), string(r.AdapterConfig.Value)}
	}
	var in handlemetric.Instance
	for i := 0; i < r.NumInstances(); i++ {
		if err := r.Instance(i, &in); err != nil {
			return view{}, err
		}
		iv := instView{Name: string(in.Name), Value: fromWireValue(t, in.Value), Dims: map[string]valView{}}
		for _, d := range in.Dimensions {
			iv.Dims[string(d.Key)] = fromWireValue(t, d.Value)
		}
		out.Instances = append(out.Instances, iv)
	}
	return out, nil
}

func randomValue(rng *rand.Rand) *policypb.Value {
	str := func() string {
		const letters = "abcdefghij/.-_ :=&"
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = letters[rng.IntN(len(letters))]
		}
		return string(b)
	}
	switch rng.IntN(12) {
	case 0:
		return nil
	case 1:
		return &policypb.Value{Value: &policypb.Value_StringValue{StringValue: str()}}
	case 2:
		return &policypb.Value{Value: &policypb.Value_Int64Value{Int64Value: rng.Int64() - rng.Int64()}}
	case 3:
		return &policypb.Value{Value: &policypb.Value_DoubleValue{DoubleValue: rng.NormFloat64() * 1e6}}
	case 4:
		return &policypb.Value{Value: &policypb.Value_BoolValue{BoolValue: rng.IntN(2) == 1}}
	case 5:
		ip := make([]byte, []int{4, 16}[rng.IntN(2)])
		for i := range ip {
			ip[i] = byte(rng.IntN(256))
		}
		return &policypb.Value{Value: &policypb.Value_IpAddressValue{IpAddressValue: &policypb.IPAddress{Value: ip}}}
	case 6:
		return &policypb.Value{Value: &policypb.Value_TimestampValue{TimestampValue: &policypb.TimeStamp{
			Value: &types.Timestamp{Seconds: rng.Int64N(2e9), Nanos: rng.Int32N(1e9)}}}}
	case 7:
		return &policypb.Value{Value: &policypb.Value_DurationValue{DurationValue: &policypb.Duration{
			Value: &types.Duration{Seconds: rng.Int64N(100), Nanos: rng.Int32N(1e9)}}}}
	case 8:
		return &policypb.Value{Value: &policypb.Value_EmailAddressValue{EmailAddressValue: &policypb.EmailAddress{Value: str()}}}
	case 9:
		return &policypb.Value{Value: &policypb.Value_DnsNameValue{DnsNameValue: &policypb.DNSName{Value: str()}}}
	case 10:
		return &policypb.Value{Value: &policypb.Value_UriValue{UriValue: &policypb.Uri{Value: str()}}}
	default:
		m := map[string]string{}
		for i := rng.IntN(4); i > 0; i-- {
			m[str()] = str()
		}
		return &policypb.Value{Value: &policypb.Value_StringMapValue{StringMapValue: &policypb.StringMap{Value: m}}}
	}
}

func randomRequest(rng *rand.Rand) *metricpb.HandleMetricRequest {
	r := &metricpb.HandleMetricRequest{DedupId: "1234"}
	if rng.IntN(4) > 0 {
		r.AdapterConfig = &types.Any{TypeUrl: "type.googleapis.com/adapter.meshmetrics.config.Params", Value: []byte{0x1a, 0x00}}
	}
	for i := rng.IntN(6); i > 0; i-- {
		in := &metricpb.InstanceMsg{Name: "i.instance.ns", Value: randomValue(rng), Dimensions: map[string]*policypb.Value{}}
		for j := rng.IntN(7); j > 0; j-- {
			in.Dimensions[string(rune('a'+j))] = randomValue(rng)
		}
		if rng.IntN(3) == 0 {
			in.MonitoredResourceType = "pod"
			in.MonitoredResourceDimensions = map[string]*policypb.Value{"x": randomValue(rng)}
		}
		r.Instances = append(r.Instances, in)
	}
	return r
}

func TestParseAgreesWithGeneratedCodeOnRandomRequests(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		req := randomRequest(rng)
		data, err := req.Marshal()
		require.NoError(t, err)
		var decoded metricpb.HandleMetricRequest
		require.NoError(t, decoded.Unmarshal(data))
		got, err := fromWire(t, data)
		require.NoError(t, err)
		require.Equal(t, fromGogo(&decoded), got, "request %d", i)
	}
}

// TestRepeatedFieldsFollowProtobufRules covers encodings Mixer never writes
// but a conforming decoder must read like generated code: a repeated scalar
// field keeps the last value, a repeated message merges, and a repeated map
// key keeps the last entry.
func TestRepeatedFieldsFollowProtobufRules(t *testing.T) {
	first := &metricpb.InstanceMsg{Name: "a.instance.ns", Value: &policypb.Value{Value: &policypb.Value_Int64Value{Int64Value: 1}},
		Dimensions: map[string]*policypb.Value{"k": {Value: &policypb.Value_StringValue{StringValue: "old"}}}}
	second := &metricpb.InstanceMsg{Name: "b.instance.ns", Value: &policypb.Value{},
		Dimensions: map[string]*policypb.Value{"k": {Value: &policypb.Value_StringValue{StringValue: "new"}}}}
	a, err := first.Marshal()
	require.NoError(t, err)
	b, err := second.Marshal()
	require.NoError(t, err)
	// Concatenating two encodings of one message is the same as merging them.
	inst := append(append([]byte{}, a...), b...)
	req := append([]byte{0x0a, byte(len(inst))}, inst...)

	var decoded metricpb.HandleMetricRequest
	require.NoError(t, decoded.Unmarshal(req))
	got, err := fromWire(t, req)
	require.NoError(t, err)
	require.Equal(t, fromGogo(&decoded), got)
	require.Equal(t, "b.instance.ns", got.Instances[0].Name)
	require.Equal(t, int64(1), got.Instances[0].Value.Int, "an empty second value must merge, not reset")
	require.Equal(t, "new", got.Instances[0].Dims["k"].Bytes)
}

// fuzz budget: 100000x
func FuzzParse(f *testing.F) {
	raw, err := golden.ReadHex("handlemetric-analyticcounter.hex")
	require.NoError(f, err)
	f.Add(raw)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 20; i++ {
		data, err := randomRequest(rng).Marshal()
		require.NoError(f, err)
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var decoded metricpb.HandleMetricRequest
		gogoErr := decoded.Unmarshal(data)
		got, wireErr := fromWire(t, data)
		if gogoErr != nil {
			require.Error(t, wireErr, "generated code rejects this input (%v); the reader must too", gogoErr)
			return
		}
		want := fromGogo(&decoded)
		if wireErr == nil {
			require.Equal(t, want, got)
			return
		}
		// The reader is stricter than generated code on a few malformed
		// encodings (generated map-entry code ignores wire types and bounds
		// keys by the parent message). What generated code would write for
		// the same content must still read the same.
		canonical, err := decoded.Marshal()
		require.NoError(t, err)
		got, err = fromWire(t, canonical)
		require.NoError(t, err, "reader rejects the canonical encoding of an accepted input")
		require.Equal(t, want, got)
	})
}

func BenchmarkParseAndReadInstances(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	req := &metricpb.HandleMetricRequest{DedupId: "1", AdapterConfig: &types.Any{TypeUrl: "t", Value: []byte{1}}}
	for i := 0; i < 100; i++ {
		dims := map[string]*policypb.Value{}
		for _, k := range []string{"source", "destination", "path", "method", "code", "version"} {
			dims[k] = &policypb.Value{Value: &policypb.Value_StringValue{StringValue: k + "-value-" + string(rune('a'+rng.IntN(26)))}}
		}
		req.Instances = append(req.Instances, &metricpb.InstanceMsg{Name: "requestcount.instance.istio-system",
			Value: &policypb.Value{Value: &policypb.Value_Int64Value{Int64Value: 1}}, Dimensions: dims})
	}
	data, err := req.Marshal()
	require.NoError(b, err)
	var r handlemetric.Request
	var in handlemetric.Instance
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Parse(data); err != nil {
			b.Fatal(err)
		}
		for j := 0; j < r.NumInstances(); j++ {
			if err := r.Instance(j, &in); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/instance")
}

func BenchmarkGeneratedUnmarshal(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	req := &metricpb.HandleMetricRequest{DedupId: "1"}
	for i := 0; i < 100; i++ {
		dims := map[string]*policypb.Value{}
		keys := []string{"source", "destination", "path", "method", "code", "version"}
		sort.Strings(keys)
		for _, k := range keys {
			dims[k] = &policypb.Value{Value: &policypb.Value_StringValue{StringValue: k + "-value-" + string(rune('a'+rng.IntN(26)))}}
		}
		req.Instances = append(req.Instances, &metricpb.InstanceMsg{Name: "requestcount.instance.istio-system",
			Value: &policypb.Value{Value: &policypb.Value_Int64Value{Int64Value: 1}}, Dimensions: dims})
	}
	data, err := req.Marshal()
	require.NoError(b, err)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var m metricpb.HandleMetricRequest
		if err := m.Unmarshal(data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/instance")
}
