package convert_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler/convert"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
)

func str(kind handlemetric.Kind, s string) handlemetric.Value {
	return handlemetric.Value{Kind: kind, Bytes: []byte(s)}
}

func stringMap(t *testing.T, kv ...string) handlemetric.Value {
	var b []byte
	for i := 0; i < len(kv); i += 2 {
		entry := append(append([]byte{0x0a, byte(len(kv[i]))}, kv[i]...), 0x12, byte(len(kv[i+1])))
		entry = append(entry, kv[i+1]...)
		b = append(append(b, 0x0a, byte(len(entry))), entry...)
	}
	require.NoError(t, handlemetric.StringMapEntries(b, func(k, v []byte) {}))
	return handlemetric.Value{Kind: handlemetric.KindStringMap, Bytes: b}
}

func TestNumber(t *testing.T) {
	tests := []struct {
		name       string
		in         handlemetric.Value
		want       float64
		isDuration bool
		reason     convert.Reason
	}{
		{"int64", handlemetric.Value{Kind: handlemetric.KindInt64, Int: -42}, -42, false, convert.OK},
		{"double", handlemetric.Value{Kind: handlemetric.KindDouble, Float: 0.25}, 0.25, false, convert.OK},
		{"NaN", handlemetric.Value{Kind: handlemetric.KindDouble, Float: math.NaN()}, 0, false, convert.NonFinite},
		{"+Inf", handlemetric.Value{Kind: handlemetric.KindDouble, Float: math.Inf(1)}, 0, false, convert.NonFinite},
		{"-Inf", handlemetric.Value{Kind: handlemetric.KindDouble, Float: math.Inf(-1)}, 0, false, convert.NonFinite},
		{"true", handlemetric.Value{Kind: handlemetric.KindBool, Int: 1}, 1, false, convert.OK},
		{"false", handlemetric.Value{Kind: handlemetric.KindBool}, 0, false, convert.OK},
		{"duration", handlemetric.Value{Kind: handlemetric.KindDuration, Int: 1, Nanos: 500_000_000}, 1.5, true, convert.OK},
		{"timestamp", handlemetric.Value{Kind: handlemetric.KindTimestamp, Int: 1600000000, Nanos: 250_000_000}, 1600000000.25, false, convert.OK},
		{"numeric string", str(handlemetric.KindString, "1235"), 1235, false, convert.OK},
		{"float string", str(handlemetric.KindString, "-0.5e3"), -500, false, convert.OK},
		{"string NaN", str(handlemetric.KindString, "NaN"), 0, false, convert.NonFinite},
		{"string overflow", str(handlemetric.KindString, "1e999"), 0, false, convert.NonFinite},
		{"text string", str(handlemetric.KindString, "abc"), 0, false, convert.NotNumeric},
		{"empty string", str(handlemetric.KindString, ""), 0, false, convert.NotNumeric},
		{"ip", str(handlemetric.KindIPAddress, "\x01\x02\x03\x04"), 0, false, convert.NotNumeric},
		{"email", str(handlemetric.KindEmail, "a@b.c"), 0, false, convert.NotNumeric},
		{"missing", handlemetric.Value{}, 0, false, convert.MissingValue},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, isDuration, reason := convert.Number(tc.in)
			require.Equal(t, tc.reason, reason)
			require.Equal(t, tc.isDuration, isDuration)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestAppendLabel(t *testing.T) {
	tests := []struct {
		name string
		in   handlemetric.Value
		want string
	}{
		{"string", str(handlemetric.KindString, "/v1/damage"), "/v1/damage"},
		{"email", str(handlemetric.KindEmail, "ops@example.com"), "ops@example.com"},
		{"dns", str(handlemetric.KindDNSName, "svc.cluster.local"), "svc.cluster.local"},
		{"uri", str(handlemetric.KindURI, "https://a/b?c=d"), "https://a/b?c=d"},
		{"int64", handlemetric.Value{Kind: handlemetric.KindInt64, Int: 200}, "200"},
		{"negative int64", handlemetric.Value{Kind: handlemetric.KindInt64, Int: -7}, "-7"},
		{"double", handlemetric.Value{Kind: handlemetric.KindDouble, Float: 0.1}, "0.1"},
		{"whole double", handlemetric.Value{Kind: handlemetric.KindDouble, Float: 200}, "200"},
		{"large double", handlemetric.Value{Kind: handlemetric.KindDouble, Float: 1e21}, "1000000000000000000000"},
		{"bool", handlemetric.Value{Kind: handlemetric.KindBool, Int: 1}, "true"},
		{"ipv4", str(handlemetric.KindIPAddress, "\x0a\x00\x00\x01"), "10.0.0.1"},
		{"ipv4-mapped", str(handlemetric.KindIPAddress, "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\x0a\x00\x00\x01"), "10.0.0.1"},
		{"ipv6", str(handlemetric.KindIPAddress, "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"), "2001:db8::1"},
		{"odd ip", str(handlemetric.KindIPAddress, "\x01\x02"), "0102"},
		{"timestamp", handlemetric.Value{Kind: handlemetric.KindTimestamp, Int: 1600000000}, "2020-09-13T12:26:40Z"},
		{"timestamp nanos", handlemetric.Value{Kind: handlemetric.KindTimestamp, Int: 1600000000, Nanos: 5}, "2020-09-13T12:26:40.000000005Z"},
		{"duration", handlemetric.Value{Kind: handlemetric.KindDuration, Int: 1, Nanos: 500_000_000}, "1.5s"},
		{"string map", stringMap(t, "b", "2", "a", "1"), "a=1&b=2"},
		{"missing", handlemetric.Value{}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, string(convert.AppendLabel([]byte("x:"), tc.in))[2:])
		})
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 64)
	values := []handlemetric.Value{
		str(handlemetric.KindString, "42"),
		{Kind: handlemetric.KindInt64, Int: 12345},
		{Kind: handlemetric.KindDouble, Float: 1.25},
		{Kind: handlemetric.KindBool, Int: 1},
		str(handlemetric.KindIPAddress, "\x0a\x00\x00\x01"),
	}
	for _, v := range values {
		allocs := testing.AllocsPerRun(100, func() {
			buf = convert.AppendLabel(buf[:0], v)
			_, _, _ = convert.Number(v)
		})
		require.Zero(t, allocs, "value kind %s", v.Kind)
	}
}

func BenchmarkNumberAndLabels(b *testing.B) {
	v := handlemetric.Value{Kind: handlemetric.KindInt64, Int: 1}
	dims := []handlemetric.Value{str(handlemetric.KindString, "productpage.default.svc.cluster.local"), {Kind: handlemetric.KindInt64, Int: 200}}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_, _, _ = convert.Number(v)
		buf = buf[:0]
		for _, d := range dims {
			buf = convert.AppendLabel(buf, d)
		}
	}
}
