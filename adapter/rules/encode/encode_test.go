package encode

import (
	"math/rand/v2"
	"testing"
	"time"

	mt "github.com/meshmetrics/meshmetrics/adapter/mixerpb/mixerpbtest"

	"github.com/gogo/protobuf/types"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/golden"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
)

func TestGoldenLayout(t *testing.T) {
	raw, err := golden.ReadHex("handlemetric-analyticcounter.hex")
	require.NoError(t, err)
	var want metricpb.HandleMetricRequest
	require.NoError(t, want.Unmarshal(raw))

	got, err := Request([]*Instance{{
		Name:       "analyticcounter.instance.istio-system",
		Value:      mt.Int(1),
		Dimensions: []Dim{{Key: "path", Value: mt.Str("/v1/damage")}},
	}}, want.AdapterConfig, "42")
	require.NoError(t, err)
	require.Equal(t, raw, got)
}

// fields lists the field numbers of a message in the order they appear.
func fields(t *testing.T, msg []byte) []protowire.Number {
	t.Helper()
	var out []protowire.Number
	for len(msg) > 0 {
		num, _, n := protowire.ConsumeField(msg)
		require.GreaterOrEqual(t, n, 0)
		out = append(out, num)
		msg = msg[n:]
	}
	return out
}

func TestEveryFieldInNumberOrderWithNameLast(t *testing.T) {
	mrt := "UNSPECIFIED"
	inst := &Instance{
		Name:                        "i.instance.default",
		Value:                       &policypb.Value{Value: &policypb.Value_DoubleValue{DoubleValue: 1}},
		Dimensions:                  []Dim{{"b", mt.Str("2")}, {"a", mt.Str("1")}, {"empty", mt.Str("")}},
		MonitoredResourceType:       &mrt,
		MonitoredResourceDimensions: []Dim{{"zone", mt.Str("eu")}},
	}
	msg, err := InstanceBytes(inst)
	require.NoError(t, err)
	require.Equal(t, []protowire.Number{1, 2, 2, 2, 3, 4, fieldName}, fields(t, msg))

	cfg := &types.Any{TypeUrl: "type.googleapis.com/x.Params", Value: []byte{0x08, 0x01}}
	req, err := Request([]*Instance{inst, {Name: "j.instance.default"}}, cfg, "7")
	require.NoError(t, err)
	require.Equal(t, []protowire.Number{1, 1, 2, 3}, fields(t, req))

	var decoded metricpb.HandleMetricRequest
	require.NoError(t, decoded.Unmarshal(req))
	require.Len(t, decoded.Instances, 2)
	got := decoded.Instances[0]
	require.Equal(t, "i.instance.default", got.Name)
	require.Equal(t, 1.0, got.Value.GetDoubleValue())
	require.Equal(t, "", got.Dimensions["empty"].GetStringValue())
	require.NotNil(t, got.Dimensions["empty"].GetValue(), "an empty string is sent as a present string_value")
	require.Equal(t, "UNSPECIFIED", got.MonitoredResourceType)
	require.Equal(t, "eu", got.MonitoredResourceDimensions["zone"].GetStringValue())
	require.Nil(t, decoded.Instances[1].Value, "a value the instance does not set is not sent")
	require.Equal(t, cfg.TypeUrl, decoded.AdapterConfig.TypeUrl)
	require.Equal(t, "7", decoded.DedupId)

	noCfg, err := Request([]*Instance{inst}, nil, "8")
	require.NoError(t, err)
	require.Equal(t, []protowire.Number{1, 3}, fields(t, noCfg), "session_based adapters get no adapter_config")
}

func TestValueMembers(t *testing.T) {
	ts, _ := types.TimestampProto(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC))
	values := []*policypb.Value{
		mt.Str("s"), mt.Int(-1),
		{Value: &policypb.Value_DoubleValue{DoubleValue: 0.5}},
		{Value: &policypb.Value_BoolValue{BoolValue: false}},
		{Value: &policypb.Value_IpAddressValue{IpAddressValue: &policypb.IPAddress{Value: []byte{10, 0, 0, 1}}}},
		{Value: &policypb.Value_TimestampValue{TimestampValue: &policypb.TimeStamp{Value: ts}}},
		{Value: &policypb.Value_DurationValue{DurationValue: &policypb.Duration{Value: types.DurationProto(time.Second)}}},
		{Value: &policypb.Value_EmailAddressValue{EmailAddressValue: &policypb.EmailAddress{Value: "a@b.c"}}},
		{Value: &policypb.Value_DnsNameValue{DnsNameValue: &policypb.DNSName{Value: "a.b"}}},
		{Value: &policypb.Value_UriValue{UriValue: &policypb.Uri{Value: "http://a"}}},
	}
	for _, v := range values {
		t.Run(v.String(), func(t *testing.T) {
			req, err := Request([]*Instance{{Name: "n", Value: v, Dimensions: []Dim{{"d", v}}}}, nil, "")
			require.NoError(t, err)
			var decoded metricpb.HandleMetricRequest
			require.NoError(t, decoded.Unmarshal(req))
			want, err := v.Marshal()
			require.NoError(t, err)
			got, err := decoded.Instances[0].Value.Marshal()
			require.NoError(t, err)
			require.Equal(t, want, got)
			got, err = decoded.Instances[0].Dimensions["d"].Marshal()
			require.NoError(t, err)
			require.Equal(t, want, got)
		})
	}
}

func TestShuffleAndCanonicalMapOrder(t *testing.T) {
	dims := func() []Dim {
		var out []Dim
		for _, k := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
			out = append(out, Dim{k, mt.Str(k)})
		}
		return out
	}
	base := &Instance{Name: "n", Value: mt.Int(1), Dimensions: dims(), MonitoredResourceDimensions: dims()}
	sorted, err := Request([]*Instance{base}, nil, "1")
	require.NoError(t, err)

	r := rand.New(rand.NewPCG(1, 2))
	orders := map[string]bool{}
	for range 20 {
		inst := &Instance{Name: "n", Value: mt.Int(1), Dimensions: dims(), MonitoredResourceDimensions: dims()}
		Shuffle(inst, r)
		orders[inst.Dimensions[0].Key+inst.Dimensions[1].Key] = true
		raw, err := Request([]*Instance{inst}, nil, "1")
		require.NoError(t, err)
		canon, err := CanonicalMapOrder(raw)
		require.NoError(t, err)
		require.Equal(t, sorted, canon, "entries were written sorted, so canonical order is the original")
	}
	require.Greater(t, len(orders), 5, "Shuffle changes the order")

	// Moving name away from last place is not hidden by canonicalisation.
	withNameFirst := protowire.AppendTag(nil, fieldName, protowire.BytesType)
	withNameFirst = protowire.AppendString(withNameFirst, "n")
	withNameFirst = protowire.AppendTag(withNameFirst, fieldValue, protowire.BytesType)
	withNameFirst = protowire.AppendBytes(withNameFirst, []byte{0x10, 0x01})
	req := protowire.AppendBytes(protowire.AppendTag(nil, fieldInstances, protowire.BytesType), withNameFirst)
	canon, err := CanonicalMapOrder(req)
	require.NoError(t, err)
	require.Equal(t, req, canon)

	_, err = CanonicalMapOrder([]byte{0x0a, 0x05, 0x01})
	require.Error(t, err)
}

func TestDedupSequence(t *testing.T) {
	d := NewDedup(18446744073709551614)
	require.Equal(t, "18446744073709551614", d.Next())
	require.Equal(t, "18446744073709551615", d.Next())
	require.Equal(t, "0", d.Next(), "the counter wraps like Mixer's atomic.Uint64")
}
