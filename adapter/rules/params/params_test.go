package params

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/protoc-gen-gogo/descriptor"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	gproto "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/golden"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/config"
)

func repoPath(parts ...string) string {
	return filepath.Join(append([]string{"..", "..", ".."}, parts...)...)
}

// meshmetricsSchema is the schema of the adapter CR that `make generate` writes.
func meshmetricsSchema(t *testing.T) *Schema {
	t.Helper()
	s, err := crd.Load(repoPath("deploy", "kubernetes", "adapter.yaml"))
	require.NoError(t, err)
	require.Len(t, s.Adapters(), 1)
	schema, err := ParseSchema(s.Adapters()[0].Config)
	require.NoError(t, err)
	return schema
}

// yamlParams decodes params the way crd does for a handler: numbers become float64, as in
// the google.protobuf.Struct Mixer receives.
func yamlParams(t *testing.T, doc string) map[string]any {
	t.Helper()
	var v map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(doc), &v))
	return structify(v).(map[string]any)
}

func structify(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = structify(e)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = structify(e)
		}
		return x
	case int:
		return float64(x)
	}
	return v
}

func TestSchemaOfTheMeshmetricsAdapterCR(t *testing.T) {
	s := meshmetricsSchema(t)
	require.Equal(t, "adapter.meshmetrics.config", s.Package)
	require.Equal(t, config.TypeURL, s.TypeURL())
}

// TestRichParamsDecodeWithConfigDecode encodes a params document that uses every kind of
// field config.proto has (strings, enums by name, int32, double, bool, repeated strings,
// repeated messages, nested messages, a oneof, packed repeated doubles, Durations, maps,
// proto and JSON names) and checks that the adapter's own decoder reads it back.
func TestRichParamsDecodeWithConfigDecode(t *testing.T) {
	doc := `
metrics:
- name: analytic_requests
  instance_name: analyticcounter.instance.istio-system
  kind: COUNTER
  label_names: [request_path, request_method]
  namespace: mesh
  description: Calls of /v1/damage
- instanceName: latency.instance.istio-system
  kind: DISTRIBUTION
  durationUnit: MILLISECONDS
  buckets:
    explicit_buckets:
      bounds: [0.005, 0.01, 1, 2.5]
- instance_name: size.instance.istio-system
  kind: DISTRIBUTION
  buckets:
    exponentialBuckets: {numFiniteBuckets: 8, scale: 1, growthFactor: 10}
- instance_name: gauge.instance.istio-system
  kind: GAUGE
  buckets:
    linear_buckets: {num_finite_buckets: "0x10", width: 2, offset: -1}
metrics_expiration_policy:
  metrics_expiry_duration: 10m
  expiryCheckIntervalDuration: 1m30s
librato:
  url: https://api.appoptics.com
  api: LEGACY
  token_path: /var/run/secrets/librato/token
  period: 30s
  tags: {env: prod, cluster: eu-1}
  max_measurements_per_request: 300
prometheus:
  disable_exposition: true
  remote_write:
    url: http://prometheus:9090/api/v1/write
    headers: {X-Scope-OrgID: tenant-1}
    basic_auth: {username: u, password_file: /p}
    insecure_skip_verify: false
limits: {max_series_per_metric: 1000, maxLabelValueLength: 64}
`
	s := meshmetricsSchema(t)
	anyCfg, err := s.AdapterConfig(yamlParams(t, doc))
	require.NoError(t, err)
	got, err := config.Decode(true, []byte(anyCfg.TypeUrl), anyCfg.Value)
	require.NoError(t, err)

	want := &config.Params{
		Metrics: []*config.Params_MetricInfo{
			{Name: "analytic_requests", InstanceName: "analyticcounter.instance.istio-system", Kind: config.Params_MetricInfo_COUNTER,
				LabelNames: []string{"request_path", "request_method"}, Namespace: "mesh", Description: "Calls of /v1/damage"},
			{InstanceName: "latency.instance.istio-system", Kind: config.Params_MetricInfo_DISTRIBUTION, DurationUnit: config.DurationUnit_MILLISECONDS,
				Buckets: &config.Params_MetricInfo_BucketsDefinition{Definition: &config.Params_MetricInfo_BucketsDefinition_ExplicitBuckets{
					ExplicitBuckets: &config.Params_MetricInfo_BucketsDefinition_Explicit{Bounds: []float64{0.005, 0.01, 1, 2.5}}}}},
			{InstanceName: "size.instance.istio-system", Kind: config.Params_MetricInfo_DISTRIBUTION,
				Buckets: &config.Params_MetricInfo_BucketsDefinition{Definition: &config.Params_MetricInfo_BucketsDefinition_ExponentialBuckets{
					ExponentialBuckets: &config.Params_MetricInfo_BucketsDefinition_Exponential{NumFiniteBuckets: 8, Scale: 1, GrowthFactor: 10}}}},
			{InstanceName: "gauge.instance.istio-system", Kind: config.Params_MetricInfo_GAUGE,
				Buckets: &config.Params_MetricInfo_BucketsDefinition{Definition: &config.Params_MetricInfo_BucketsDefinition_LinearBuckets{
					LinearBuckets: &config.Params_MetricInfo_BucketsDefinition_Linear{NumFiniteBuckets: 16, Width: 2, Offset: -1}}}},
		},
		MetricsExpirationPolicy: &config.Params_MetricsExpirationPolicy{MetricsExpiryDuration: 10 * time.Minute, ExpiryCheckIntervalDuration: 90 * time.Second},
		Librato: &config.LibratoParams{Url: "https://api.appoptics.com", Api: config.LibratoParams_LEGACY, TokenPath: "/var/run/secrets/librato/token",
			Period: 30 * time.Second, Tags: map[string]string{"env": "prod", "cluster": "eu-1"}, MaxMeasurementsPerRequest: 300},
		Prometheus: &config.PrometheusParams{DisableExposition: true, RemoteWrite: &config.RemoteWrite{
			Url: "http://prometheus:9090/api/v1/write", Headers: map[string]string{"X-Scope-OrgID": "tenant-1"},
			BasicAuth: &config.BasicAuth{Username: "u", PasswordFile: "/p"}}},
		Limits: &config.Limits{MaxSeriesPerMetric: 1000, MaxLabelValueLength: 64},
	}
	require.True(t, want.Equal(got), "decoded:\n%s\nwant:\n%s", got, want)

	// The same document encodes to the same bytes every time: sorted keys, sorted map keys.
	again, err := s.Encode(yamlParams(t, doc))
	require.NoError(t, err)
	require.Equal(t, anyCfg.Value, again)
}

// TestSortedKeyOrderMatchesTheGolden encodes the golden request's params and gets the
// golden's bytes exactly: keys sorted (instance_name, kind, label_names, name), not in
// field-number order as a generated marshaller would write them.
func TestSortedKeyOrderMatchesTheGolden(t *testing.T) {
	raw, err := golden.ReadHex("handlemetric-analyticcounter.hex")
	require.NoError(t, err)
	var req metricpb.HandleMetricRequest
	require.NoError(t, req.Unmarshal(raw))

	s := meshmetricsSchema(t)
	cfg, err := s.AdapterConfig(yamlParams(t, `
metrics:
- name: damage_requests
  label_names: [path]
  kind: COUNTER
  instance_name: analyticcounter.instance.istio-system
`))
	require.NoError(t, err)
	require.Equal(t, req.AdapterConfig.TypeUrl, cfg.TypeUrl)
	require.Equal(t, req.AdapterConfig.Value, cfg.Value)

	generated, err := (&config.Params{Metrics: []*config.Params_MetricInfo{{Name: "damage_requests", InstanceName: "analyticcounter.instance.istio-system",
		Kind: config.Params_MetricInfo_COUNTER, LabelNames: []string{"path"}}}}).Marshal()
	require.NoError(t, err)
	require.NotEqual(t, generated, cfg.Value, "field-number order differs from Mixer's sorted-key order")
}

func TestEmptyParams(t *testing.T) {
	s := meshmetricsSchema(t)
	cfg, err := s.AdapterConfig(nil)
	require.NoError(t, err)
	require.Equal(t, config.TypeURL, cfg.TypeUrl)
	require.Empty(t, cfg.Value, "a handler without params sends an Any with an empty value")

	none, err := ParseSchema("")
	require.NoError(t, err)
	require.Nil(t, none, "an adapter CR without config sends no adapter_config")
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"unknown field", `{nosuch: 1}`, "nosuch: field 'nosuch' not found in message 'Params' (known fields: librato, librato_email, librato_token, limits, metrics, metrics_expiration_policy, otlp, prometheus)"},
		{"unknown nested field", `{metrics: [{kind: COUNTER, label: x}]}`, "metrics[0].label: field 'label' not found in message 'MetricInfo' (known fields: buckets, description, duration_unit, instance_name, kind, label_names, name, namespace)"},
		{"enum by unknown name", `{metrics: [{kind: COUNTR}]}`, "metrics[0].kind: unrecognized enum value 'COUNTR' for enum 'Kind' (want one of UNSPECIFIED, GAUGE, COUNTER, DISTRIBUTION)"},
		{"enum by number", `{metrics: [{kind: 2}]}`, "metrics[0].kind: is of type 'float64' instead of expected type 'enum(adapter.meshmetrics.config.Params.MetricInfo.Kind)'"},
		{"fractional int", `{limits: {max_series_per_metric: 1.5}}`, "limits.max_series_per_metric: is of type 'float64' instead of expected type 'int'"},
		{"non-numeric int string", `{limits: {max_series_per_metric: lots}}`, "limits.max_series_per_metric: is of type 'string' instead of expected type 'int'"},
		{"string for a bool", `{prometheus: {disable_exposition: "yes"}}`, "prometheus.disable_exposition: is of type 'string' instead of expected type 'bool'"},
		{"number for a string", `{librato: {url: 5}}`, "librato.url: is of type 'float64' instead of expected type 'string'"},
		{"scalar for a list", `{metrics: [{label_names: path}]}`, "metrics[0].label_names: is of type 'string' instead of expected type '[]string'"},
		{"scalar for a message", `{limits: 5}`, "limits: is of type 'float64' instead of expected type 'adapter.meshmetrics.config.Limits'"},
		{"list item not a message", `{metrics: [x]}`, "metrics[0]: is of type 'string' instead of expected type 'adapter.meshmetrics.config.Params.MetricInfo'"},
		{"scalar for a map", `{librato: {tags: x}}`, "librato.tags: is of type 'string' instead of expected type 'map<string, string>'"},
		{"bad map value", `{librato: {tags: {a: 1}}}`, "librato.tags[a].value: is of type 'float64' instead of expected type 'string'"},
		{"bad duration", `{librato: {period: 5}}`, "librato.period: message type '.google.protobuf.Duration' got type 'float64', want a string"},
		{"unparsable duration", `{librato: {period: soon}}`, `librato.period: time: invalid duration "soon"`},
		{"bad packed item", `{metrics: [{buckets: {explicit_buckets: {bounds: [1, x]}}}]}`, "metrics[0].buckets.explicit_buckets.bounds[1]: is of type 'string' instead of expected type 'float64'"},
		{"oneof set twice", `{metrics: [{buckets: {linear_buckets: {}, explicit_buckets: {}}}]}`, "metrics[0].buckets.linear_buckets: fields 'explicit_buckets' and 'linear_buckets' belong to oneof 'definition' of message 'BucketsDefinition': set only one"},
	}
	s := meshmetricsSchema(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Encode(yamlParams(t, tt.doc))
			require.EqualError(t, err, tt.want)
			var pe *Error
			require.ErrorAs(t, err, &pe)
		})
	}
}

func TestParseSchemaErrors(t *testing.T) {
	_, err := ParseSchema("not base64!")
	require.ErrorContains(t, err, "not standard base64")
	_, err = ParseSchema("AAAA")
	require.ErrorContains(t, err, "not a FileDescriptorSet")
	_, err = NewSchema(&descriptor.FileDescriptorSet{File: []*descriptor.FileDescriptorProto{{Name: proto.String("x.proto"),
		MessageType: []*descriptor.DescriptorProto{{Name: proto.String("Other")}}}}})
	require.EqualError(t, err, "adapter config declares no top-level message named Params")
}

// allKinds is a descriptor with every field kind Mixer's encoder handles, in proto3.
func allKinds() *descriptor.FileDescriptorSet {
	f := func(name string, num int32, typ descriptor.FieldDescriptorProto_Type, label descriptor.FieldDescriptorProto_Label, typeName string) *descriptor.FieldDescriptorProto {
		fd := &descriptor.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), Label: label.Enum()}
		if typeName != "" {
			fd.TypeName = proto.String(typeName)
		}
		return fd
	}
	opt := descriptor.FieldDescriptorProto_LABEL_OPTIONAL
	rep := descriptor.FieldDescriptorProto_LABEL_REPEATED
	unpacked := f("r_unpacked", 30, descriptor.FieldDescriptorProto_TYPE_INT32, rep, "")
	unpacked.Options = &descriptor.FieldOptions{Packed: proto.Bool(false)}
	return &descriptor.FileDescriptorSet{File: []*descriptor.FileDescriptorProto{
		{Name: proto.String("google/protobuf/duration.proto"), Package: proto.String("google.protobuf"), Syntax: proto.String("proto3"),
			MessageType: []*descriptor.DescriptorProto{{Name: proto.String("Duration"), Field: []*descriptor.FieldDescriptorProto{
				f("seconds", 1, descriptor.FieldDescriptorProto_TYPE_INT64, opt, ""), f("nanos", 2, descriptor.FieldDescriptorProto_TYPE_INT32, opt, "")}}}},
		{Name: proto.String("google/protobuf/timestamp.proto"), Package: proto.String("google.protobuf"), Syntax: proto.String("proto3"),
			MessageType: []*descriptor.DescriptorProto{{Name: proto.String("Timestamp"), Field: []*descriptor.FieldDescriptorProto{
				f("seconds", 1, descriptor.FieldDescriptorProto_TYPE_INT64, opt, ""), f("nanos", 2, descriptor.FieldDescriptorProto_TYPE_INT32, opt, "")}}}},
		{Name: proto.String("kinds.proto"), Package: proto.String("kinds"), Syntax: proto.String("proto3"),
			Dependency: []string{"google/protobuf/duration.proto", "google/protobuf/timestamp.proto"},
			EnumType: []*descriptor.EnumDescriptorProto{{Name: proto.String("Color"), Value: []*descriptor.EnumValueDescriptorProto{
				{Name: proto.String("NONE"), Number: proto.Int32(0)}, {Name: proto.String("RED"), Number: proto.Int32(1)}, {Name: proto.String("BLUE"), Number: proto.Int32(7)}}}},
			MessageType: []*descriptor.DescriptorProto{{
				Name: proto.String("Params"),
				Field: []*descriptor.FieldDescriptorProto{
					f("f_double", 1, descriptor.FieldDescriptorProto_TYPE_DOUBLE, opt, ""),
					f("f_float", 2, descriptor.FieldDescriptorProto_TYPE_FLOAT, opt, ""),
					f("f_int64", 3, descriptor.FieldDescriptorProto_TYPE_INT64, opt, ""),
					f("f_uint64", 4, descriptor.FieldDescriptorProto_TYPE_UINT64, opt, ""),
					f("f_int32", 5, descriptor.FieldDescriptorProto_TYPE_INT32, opt, ""),
					f("f_uint32", 6, descriptor.FieldDescriptorProto_TYPE_UINT32, opt, ""),
					f("f_sint32", 7, descriptor.FieldDescriptorProto_TYPE_SINT32, opt, ""),
					f("f_sint64", 8, descriptor.FieldDescriptorProto_TYPE_SINT64, opt, ""),
					f("f_fixed32", 9, descriptor.FieldDescriptorProto_TYPE_FIXED32, opt, ""),
					f("f_fixed64", 10, descriptor.FieldDescriptorProto_TYPE_FIXED64, opt, ""),
					f("f_sfixed32", 11, descriptor.FieldDescriptorProto_TYPE_SFIXED32, opt, ""),
					f("f_sfixed64", 12, descriptor.FieldDescriptorProto_TYPE_SFIXED64, opt, ""),
					f("f_bool", 13, descriptor.FieldDescriptorProto_TYPE_BOOL, opt, ""),
					f("f_string", 14, descriptor.FieldDescriptorProto_TYPE_STRING, opt, ""),
					f("f_enum", 15, descriptor.FieldDescriptorProto_TYPE_ENUM, opt, ".kinds.Color"),
					f("f_duration", 16, descriptor.FieldDescriptorProto_TYPE_MESSAGE, opt, ".google.protobuf.Duration"),
					f("f_timestamp", 17, descriptor.FieldDescriptorProto_TYPE_MESSAGE, opt, ".google.protobuf.Timestamp"),
					f("r_sint64", 18, descriptor.FieldDescriptorProto_TYPE_SINT64, rep, ""),
					f("r_fixed32", 19, descriptor.FieldDescriptorProto_TYPE_FIXED32, rep, ""),
					f("r_float", 20, descriptor.FieldDescriptorProto_TYPE_FLOAT, rep, ""),
					f("r_bool", 21, descriptor.FieldDescriptorProto_TYPE_BOOL, rep, ""),
					f("r_enum", 22, descriptor.FieldDescriptorProto_TYPE_ENUM, rep, ".kinds.Color"),
					f("m_int", 23, descriptor.FieldDescriptorProto_TYPE_MESSAGE, rep, ".kinds.Params.MIntEntry"),
					f("f_bytes", 24, descriptor.FieldDescriptorProto_TYPE_BYTES, opt, ""),
					unpacked,
				},
				NestedType: []*descriptor.DescriptorProto{{Name: proto.String("MIntEntry"), Options: &descriptor.MessageOptions{MapEntry: proto.Bool(true)},
					Field: []*descriptor.FieldDescriptorProto{
						f("key", 1, descriptor.FieldDescriptorProto_TYPE_INT32, opt, ""),
						f("value", 2, descriptor.FieldDescriptorProto_TYPE_ENUM, opt, ".kinds.Color")}}},
			}},
		},
	}}
}

// decodeDynamic reads bytes with protobuf-go's reflection over the same descriptor, an
// implementation independent of the encoder under test.
func decodeDynamic(t *testing.T, fds *descriptor.FileDescriptorSet, data []byte) protoreflect.Message {
	t.Helper()
	raw, err := proto.Marshal(fds)
	require.NoError(t, err)
	var set descriptorpb.FileDescriptorSet
	require.NoError(t, gproto.Unmarshal(raw, &set))
	files, err := protodesc.NewFiles(&set)
	require.NoError(t, err)
	md, err := files.FindDescriptorByName("kinds.Params")
	require.NoError(t, err)
	msg := dynamicpb.NewMessage(md.(protoreflect.MessageDescriptor))
	require.NoError(t, gproto.Unmarshal(data, msg))
	return msg
}

func TestEveryScalarKindDecodesWithAnIndependentDecoder(t *testing.T) {
	fds := allKinds()
	s, err := NewSchema(fds)
	require.NoError(t, err)
	_, err = s.Encode(map[string]any{"f_uint64": "18446744073709551615"})
	require.EqualError(t, err, "f_uint64: is of type 'string' instead of expected type 'int'", "Mixer parses unsigned values as int64 too")

	data, err := s.Encode(yamlParams(t, `
fDouble: 1.5
f_float: 2
f_int64: -3
f_uint64: "0x7fffffffffffffff"
f_int32: -4
f_uint32: 4000000000
f_sint32: -5
f_sint64: -6
f_fixed32: 7
f_fixed64: 8
f_sfixed32: -9
f_sfixed64: -10
f_bool: true
f_string: héllo
f_enum: BLUE
f_duration: 1h2m3.5s
f_timestamp: "2020-01-02T03:04:05.5Z"
r_sint64: [-1, 0, 1]
r_fixed32: [1, 2]
r_float: [0.5, 1]
r_bool: [true, false]
r_enum: [RED, NONE]
m_int: {"3": RED, "-1": BLUE}
r_unpacked: [5, 6]
`))
	require.NoError(t, err)
	msg := decodeDynamic(t, fds, data)
	get := func(name string) protoreflect.Value {
		return msg.Get(msg.Descriptor().Fields().ByName(protoreflect.Name(name)))
	}
	require.Equal(t, 1.5, get("f_double").Float())
	require.Equal(t, 2.0, get("f_float").Float())
	require.Equal(t, int64(-3), get("f_int64").Int())
	require.Equal(t, uint64(1<<63-1), get("f_uint64").Uint())
	require.Equal(t, int64(-4), get("f_int32").Int())
	require.Equal(t, uint64(4000000000), get("f_uint32").Uint())
	require.Equal(t, int64(-5), get("f_sint32").Int())
	require.Equal(t, int64(-6), get("f_sint64").Int())
	require.Equal(t, uint64(7), get("f_fixed32").Uint())
	require.Equal(t, uint64(8), get("f_fixed64").Uint())
	require.Equal(t, int64(-9), get("f_sfixed32").Int())
	require.Equal(t, int64(-10), get("f_sfixed64").Int())
	require.True(t, get("f_bool").Bool())
	require.Equal(t, "héllo", get("f_string").String())
	require.Equal(t, protoreflect.EnumNumber(7), get("f_enum").Enum())
	dur := get("f_duration").Message()
	require.Equal(t, int64(3723), dur.Get(dur.Descriptor().Fields().ByName("seconds")).Int())
	require.Equal(t, int64(500000000), dur.Get(dur.Descriptor().Fields().ByName("nanos")).Int())
	ts := get("f_timestamp").Message()
	require.Equal(t, time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC).Unix(), ts.Get(ts.Descriptor().Fields().ByName("seconds")).Int())
	list := func(name string) []any {
		l := get(name).List()
		out := make([]any, l.Len())
		for i := range out {
			out[i] = l.Get(i).Interface()
		}
		return out
	}
	require.Equal(t, []any{int64(-1), int64(0), int64(1)}, list("r_sint64"))
	require.Equal(t, []any{uint32(1), uint32(2)}, list("r_fixed32"))
	require.Equal(t, []any{float32(0.5), float32(1)}, list("r_float"))
	require.Equal(t, []any{true, false}, list("r_bool"))
	require.Equal(t, []any{protoreflect.EnumNumber(1), protoreflect.EnumNumber(0)}, list("r_enum"))
	require.Equal(t, []any{int32(5), int32(6)}, list("r_unpacked"))
	m := get("m_int").Map()
	require.Equal(t, 2, m.Len())
	require.Equal(t, protoreflect.EnumNumber(1), m.Get(protoreflect.ValueOfInt32(3).MapKey()).Enum())
	require.Equal(t, protoreflect.EnumNumber(7), m.Get(protoreflect.ValueOfInt32(-1).MapKey()).Enum())

	_, err = s.Encode(map[string]any{"f_bytes": "AAE="})
	require.EqualError(t, err, "f_bytes: unrecognized field type 'TYPE_BYTES': Mixer cannot encode it from YAML")
}

// TestWireLayout pins the layout decisions a decoder cannot see: packed versus unpacked
// repeated scalars, and map entries written key first, in sorted key order.
func TestWireLayout(t *testing.T) {
	s, err := NewSchema(allKinds())
	require.NoError(t, err)
	tests := []struct {
		doc  string
		want []byte
	}{
		// Field 18 (tag 0x92 0x01), packed: length 2, zigzag(-1)=1, zigzag(1)=2.
		{`{r_sint64: [-1, 1]}`, []byte{0x92, 0x01, 2, 1, 2}},
		// Field 30 with packed=false: one tag (0xf0 0x01) per element.
		{`{r_unpacked: [5, 6]}`, []byte{0xf0, 0x01, 5, 0xf0, 0x01, 6}},
		// Field 23 (0xba 0x01): entries sorted by key as written ("-1" < "3"), key then value.
		{`{m_int: {"3": RED, "-1": BLUE}}`, []byte{
			0xba, 0x01, 13, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x10, 7,
			0xba, 0x01, 4, 0x08, 3, 0x10, 1}},
		// Keys sorted: f_bool (13), f_enum (15), f_string (14).
		{`{f_string: b, f_bool: true, f_enum: RED}`, []byte{13 << 3, 1, 15 << 3, 1, 14<<3 | 2, 1, 'b'}},
	}
	for _, tt := range tests {
		t.Run(tt.doc, func(t *testing.T) {
			got, err := s.Encode(yamlParams(t, tt.doc))
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

// TestRegisteredSchemaEncodesLikeTheAdapterCR: the schema from the generated code's
// registration (no imports in the set) and the one from the adapter CR give the same bytes,
// Durations included.
func TestRegisteredSchemaEncodesLikeTheAdapterCR(t *testing.T) {
	reg, err := Registered("config.proto")
	require.NoError(t, err)
	require.Equal(t, config.TypeURL, reg.TypeURL())
	doc := yamlParams(t, `{metrics: [{instance_name: a, kind: COUNTER}], librato: {period: 30s, token_path: /t}}`)
	want, err := meshmetricsSchema(t).Encode(doc)
	require.NoError(t, err)
	got, err := reg.Encode(doc)
	require.NoError(t, err)
	require.Equal(t, want, got)

	_, err = Registered("nosuch.proto")
	require.EqualError(t, err, `no registered file "nosuch.proto"`)
}
