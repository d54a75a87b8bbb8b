package convert_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/convert"
	"github.com/meshmetrics/meshmetrics/adapter/wire"
)

func str(kind wire.Kind, s string) wire.Value { return wire.Value{Kind: kind, Bytes: []byte(s)} }

func stringMap(t *testing.T, kv ...string) wire.Value {
	var b []byte
	for i := 0; i < len(kv); i += 2 {
		entry := append(append([]byte{0x0a, byte(len(kv[i]))}, kv[i]...), 0x12, byte(len(kv[i+1])))
		entry = append(entry, kv[i+1]...)
		b = append(append(b, 0x0a, byte(len(entry))), entry...)
	}
	require.NoError(t, wire.StringMapEntries(b, func(k, v []byte) {}))
	return wire.Value{Kind: wire.KindStringMap, Bytes: b}
}

func TestNumber(t *testing.T) {
	tests := []struct {
		name       string
		in         wire.Value
		want       float64
		isDuration bool
		reason     convert.Reason
	}{
		{"int64", wire.Value{Kind: wire.KindInt64, Int: -42}, -42, false, convert.OK},
		{"double", wire.Value{Kind: wire.KindDouble, Float: 0.25}, 0.25, false, convert.OK},
		{"NaN", wire.Value{Kind: wire.KindDouble, Float: math.NaN()}, 0, false, convert.NonFinite},
		{"+Inf", wire.Value{Kind: wire.KindDouble, Float: math.Inf(1)}, 0, false, convert.NonFinite},
		{"-Inf", wire.Value{Kind: wire.KindDouble, Float: math.Inf(-1)}, 0, false, convert.NonFinite},
		{"true", wire.Value{Kind: wire.KindBool, Int: 1}, 1, false, convert.OK},
		{"false", wire.Value{Kind: wire.KindBool}, 0, false, convert.OK},
		{"duration", wire.Value{Kind: wire.KindDuration, Int: 1, Nanos: 500_000_000}, 1.5, true, convert.OK},
		{"timestamp", wire.Value{Kind: wire.KindTimestamp, Int: 1600000000, Nanos: 250_000_000}, 1600000000.25, false, convert.OK},
		{"numeric string", str(wire.KindString, "1235"), 1235, false, convert.OK},
		{"float string", str(wire.KindString, "-0.5e3"), -500, false, convert.OK},
		{"string NaN", str(wire.KindString, "NaN"), 0, false, convert.NonFinite},
		{"string overflow", str(wire.KindString, "1e999"), 0, false, convert.NonFinite},
		{"text string", str(wire.KindString, "abc"), 0, false, convert.NotNumeric},
		{"empty string", str(wire.KindString, ""), 0, false, convert.NotNumeric},
		{"ip", str(wire.KindIPAddress, "\x01\x02\x03\x04"), 0, false, convert.NotNumeric},
		{"email", str(wire.KindEmail, "a@b.c"), 0, false, convert.NotNumeric},
		{"missing", wire.Value{}, 0, false, convert.MissingValue},
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
		in   wire.Value
		want string
	}{
		{"string", str(wire.KindString, "/v1/damage"), "/v1/damage"},
		{"email", str(wire.KindEmail, "ops@example.com"), "ops@example.com"},
		{"dns", str(wire.KindDNSName, "svc.cluster.local"), "svc.cluster.local"},
		{"uri", str(wire.KindURI, "https://a/b?c=d"), "https://a/b?c=d"},
		{"int64", wire.Value{Kind: wire.KindInt64, Int: 200}, "200"},
		{"negative int64", wire.Value{Kind: wire.KindInt64, Int: -7}, "-7"},
		{"double", wire.Value{Kind: wire.KindDouble, Float: 0.1}, "0.1"},
		{"whole double", wire.Value{Kind: wire.KindDouble, Float: 200}, "200"},
		{"large double", wire.Value{Kind: wire.KindDouble, Float: 1e21}, "1000000000000000000000"},
		{"bool", wire.Value{Kind: wire.KindBool, Int: 1}, "true"},
		{"ipv4", str(wire.KindIPAddress, "\x0a\x00\x00\x01"), "10.0.0.1"},
		{"ipv4-mapped", str(wire.KindIPAddress, "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\x0a\x00\x00\x01"), "10.0.0.1"},
		{"ipv6", str(wire.KindIPAddress, "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"), "2001:db8::1"},
		{"odd ip", str(wire.KindIPAddress, "\x01\x02"), "0102"},
		{"timestamp", wire.Value{Kind: wire.KindTimestamp, Int: 1600000000}, "2020-09-13T12:26:40Z"},
		{"timestamp nanos", wire.Value{Kind: wire.KindTimestamp, Int: 1600000000, Nanos: 5}, "2020-09-13T12:26:40.000000005Z"},
		{"duration", wire.Value{Kind: wire.KindDuration, Int: 1, Nanos: 500_000_000}, "1.5s"},
		{"string map", stringMap(t, "b", "2", "a", "1"), "a=1&b=2"},
		{"missing", wire.Value{}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, string(convert.AppendLabel([]byte("x:"), tc.in))[2:])
		})
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 64)
	values := []wire.Value{
		str(wire.KindString, "42"),
		{Kind: wire.KindInt64, Int: 12345},
		{Kind: wire.KindDouble, Float: 1.25},
		{Kind: wire.KindBool, Int: 1},
		str(wire.KindIPAddress, "\x0a\x00\x00\x01"),
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
	v := wire.Value{Kind: wire.KindInt64, Int: 1}
	dims := []wire.Value{str(wire.KindString, "productpage.default.svc.cluster.local"), {Kind: wire.KindInt64, Int: 200}}
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
