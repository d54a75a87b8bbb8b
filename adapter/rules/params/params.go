// Package params encodes a handler's params into adapter bytes the way Mixer does: driven by
// the adapter CR's FileDescriptorSet, with keys in sorted order rather than field order.
package params

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/protoc-gen-gogo/descriptor"
	"github.com/gogo/protobuf/types"
)

// Schema is the Params message of an adapter, read from its CR's `config`.
type Schema struct {
	// Package is the proto package of the file that declares Params.
	Package  string
	messages map[string]*descriptor.DescriptorProto
	enums    map[string]*descriptor.EnumDescriptorProto
}

// TypeURL is the type_url Mixer puts in adapter_config, e.g.
// type.googleapis.com/adapter.meshmetrics.config.Params.
func (s *Schema) TypeURL() string { return "type.googleapis.com/" + s.Package + ".Params" }

// MessageName is the fully qualified name of Params with a leading dot, as descriptors
// spell type references.
func (s *Schema) MessageName() string { return "." + s.Package + ".Params" }

// ParseSchema reads an adapter CR's `config`: standard base64 of a serialized
// FileDescriptorSet. As Mixer does (runtime/config/descriptorUtil.go,
// GetAdapterCfgDescriptor), the Params message is the top-level message named exactly
// Params; when several files declare one, the last wins. An empty config gives a nil Schema:
// such an adapter receives no adapter_config.
func ParseSchema(config string) (*Schema, error) {
	if config == "" {
		return nil, nil
	}
	raw, err := base64.StdEncoding.DecodeString(config)
	if err != nil {
		return nil, fmt.Errorf("adapter config is not standard base64: %w", err)
	}
	var fds descriptor.FileDescriptorSet
	if err := proto.Unmarshal(raw, &fds); err != nil {
		return nil, fmt.Errorf("adapter config is not a FileDescriptorSet: %w", err)
	}
	return NewSchema(&fds)
}

// Registered builds a Schema from a .proto file that gogo-generated code registered (for
// meshmetrics' params, "config.proto" once package config is linked in), for callers that do
// not have the adapter CR at hand. Imports are not included; Durations and Timestamps still
// encode, as Mixer's encoders for them go by type name.
func Registered(file string) (*Schema, error) {
	gz := proto.FileDescriptor(file)
	if gz == nil {
		return nil, fmt.Errorf("no registered file %q", file)
	}
	r, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var fd descriptor.FileDescriptorProto
	if err := proto.Unmarshal(raw, &fd); err != nil {
		return nil, err
	}
	return NewSchema(&descriptor.FileDescriptorSet{File: []*descriptor.FileDescriptorProto{&fd}})
}

// NewSchema finds Params in a FileDescriptorSet.
func NewSchema(fds *descriptor.FileDescriptorSet) (*Schema, error) {
	s := &Schema{messages: map[string]*descriptor.DescriptorProto{}, enums: map[string]*descriptor.EnumDescriptorProto{}}
	found := false
	for _, f := range fds.GetFile() {
		prefix := ""
		if f.GetPackage() != "" {
			prefix = "." + f.GetPackage()
		}
		for _, m := range f.GetMessageType() {
			if m.GetName() == "Params" {
				s.Package, found = f.GetPackage(), true
			}
			s.addMessage(prefix, m)
		}
		for _, e := range f.GetEnumType() {
			s.enums[prefix+"."+e.GetName()] = e
		}
	}
	if !found {
		return nil, errors.New("adapter config declares no top-level message named Params")
	}
	return s, nil
}

func (s *Schema) addMessage(prefix string, m *descriptor.DescriptorProto) {
	name := prefix + "." + m.GetName()
	s.messages[name] = m
	for _, n := range m.GetNestedType() {
		s.addMessage(name, n)
	}
	for _, e := range m.GetEnumType() {
		s.enums[name+"."+e.GetName()] = e
	}
}

// AdapterConfig is what Mixer sends as adapter_config for a handler with these params:
// Params encoded in sorted-key order inside an Any. A handler without params gets an Any
// with an empty value (ephemeral.go, processDynamicHandlerConfigs).
func (s *Schema) AdapterConfig(params map[string]any) (*types.Any, error) {
	value, err := s.Encode(params)
	if err != nil {
		return nil, err
	}
	return &types.Any{TypeUrl: s.TypeURL(), Value: value}, nil
}

// Encode encodes params as the Params message.
func (s *Schema) Encode(params map[string]any) ([]byte, error) {
	return s.EncodeMessage(s.MessageName(), params)
}

// EncodeMessage encodes data as the named message (".pkg.Msg") with Mixer's YAML encoder
// rules (mixer/pkg/protobuf/yaml/encoder.go and namedEncoder.go, istio 1.7):
//   - keys are encoded in sorted order, each field named by its proto name or JSON name;
//     unknown keys are an error; nil values are skipped;
//   - repeated scalars are packed unless the field says packed=false, as gogo's
//     IsPacked3 decides; repeated strings and messages are written one by one;
//   - maps are written with their keys sorted, key before value;
//   - enums are given by value name only;
//   - integers accept whole numbers and strings strconv.ParseInt reads with base 0;
//     doubles and floats accept any number;
//   - google.protobuf.Duration takes a Go duration string and Timestamp an RFC 3339 one.
//
// Where Mixer silently writes what it was given, Encode refuses: two members of one oneof
// (the adapter would see only the last), bytes and group fields (Mixer fails on them too,
// with "unrecognized field type").
func (s *Schema) EncodeMessage(name string, data map[string]any) ([]byte, error) {
	var b proto.Buffer
	if err := s.message(&b, "", name, data); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Error is an encoding problem at a field path such as metrics[0].kind.
type Error struct {
	Path string
	Msg  string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

func fail(path, format string, args ...any) error {
	return &Error{Path: path, Msg: fmt.Sprintf(format, args...)}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (s *Schema) message(b *proto.Buffer, path, name string, data map[string]any) error {
	md := s.messages[name]
	if md == nil {
		return fail(path, "cannot resolve message '%s'", strings.TrimPrefix(name, "."))
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	oneofs := map[int32]string{}
	for _, k := range keys {
		fd := findField(md, k)
		if fd == nil {
			return fail(join(path, k), "field '%s' not found in message '%s' (known fields: %s)", k, md.GetName(), fieldNames(md))
		}
		v := data[k]
		if v == nil {
			continue
		}
		if fd.OneofIndex != nil {
			if other, dup := oneofs[fd.GetOneofIndex()]; dup {
				return fail(join(path, k), "fields '%s' and '%s' belong to oneof '%s' of message '%s': set only one",
					other, k, md.GetOneofDecl()[fd.GetOneofIndex()].GetName(), md.GetName())
			}
			oneofs[fd.GetOneofIndex()] = k
		}
		if err := s.field(b, join(path, k), v, fd); err != nil {
			return err
		}
	}
	return nil
}

// findField matches the proto name or the JSON name (yaml/resolver.go, findFieldByName).
func findField(md *descriptor.DescriptorProto, name string) *descriptor.FieldDescriptorProto {
	for _, f := range md.GetField() {
		if f.GetName() == name || jsonName(f) == name {
			return f
		}
	}
	return nil
}

// jsonName is the descriptor's json_name, which protoc always fills in, or protoc's
// lowerCamel rule for hand-built descriptors that lack it.
func jsonName(f *descriptor.FieldDescriptorProto) string {
	if f.JsonName != nil {
		return f.GetJsonName()
	}
	var b strings.Builder
	upper := false
	for _, r := range f.GetName() {
		if r == '_' {
			upper = true
			continue
		}
		if upper && 'a' <= r && r <= 'z' {
			r -= 'a' - 'A'
		}
		upper = false
		b.WriteRune(r)
	}
	return b.String()
}

func fieldNames(md *descriptor.DescriptorProto) string {
	names := make([]string, 0, len(md.GetField()))
	for _, f := range md.GetField() {
		names = append(names, f.GetName())
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func key(fd *descriptor.FieldDescriptorProto, wire int) uint64 {
	return uint64(fd.GetNumber())<<3 | uint64(wire)
}

const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

// scalarWire is the wire type of one element of a scalar field.
func scalarWire(t descriptor.FieldDescriptorProto_Type) (int, bool) {
	switch t {
	case descriptor.FieldDescriptorProto_TYPE_DOUBLE, descriptor.FieldDescriptorProto_TYPE_FIXED64,
		descriptor.FieldDescriptorProto_TYPE_SFIXED64:
		return wireFixed64, true
	case descriptor.FieldDescriptorProto_TYPE_FLOAT, descriptor.FieldDescriptorProto_TYPE_FIXED32,
		descriptor.FieldDescriptorProto_TYPE_SFIXED32:
		return wireFixed32, true
	case descriptor.FieldDescriptorProto_TYPE_INT64, descriptor.FieldDescriptorProto_TYPE_UINT64,
		descriptor.FieldDescriptorProto_TYPE_INT32, descriptor.FieldDescriptorProto_TYPE_UINT32,
		descriptor.FieldDescriptorProto_TYPE_SINT32, descriptor.FieldDescriptorProto_TYPE_SINT64,
		descriptor.FieldDescriptorProto_TYPE_BOOL, descriptor.FieldDescriptorProto_TYPE_ENUM:
		return wireVarint, true
	}
	return 0, false
}

func (s *Schema) field(b *proto.Buffer, path string, v any, fd *descriptor.FieldDescriptorProto) error {
	t := fd.GetType()
	switch t {
	case descriptor.FieldDescriptorProto_TYPE_MESSAGE:
		return s.messageField(b, path, v, fd)
	case descriptor.FieldDescriptorProto_TYPE_STRING:
		if !fd.IsRepeated() {
			str, ok := v.(string)
			if !ok {
				return badType(path, "string", v)
			}
			_ = b.EncodeVarint(key(fd, wireBytes))
			_ = b.EncodeStringBytes(str)
			return nil
		}
		list, ok := v.([]any)
		if !ok {
			return badType(path, "[]string", v)
		}
		for i, item := range list {
			str, ok := item.(string)
			if !ok {
				return badType(fmt.Sprintf("%s[%d]", path, i), "string", item)
			}
			_ = b.EncodeVarint(key(fd, wireBytes))
			_ = b.EncodeStringBytes(str)
		}
		return nil
	}
	wire, ok := scalarWire(t)
	if !ok {
		return fail(path, "unrecognized field type '%s': Mixer cannot encode it from YAML", t)
	}
	if !fd.IsRepeated() {
		_ = b.EncodeVarint(key(fd, wire))
		return s.scalar(b, path, v, fd)
	}
	list, ok := v.([]any)
	if !ok {
		return badType(path, "[]"+scalarName(fd), v)
	}
	if fd.IsPacked() || fd.IsPacked3() {
		var packed proto.Buffer
		for i, item := range list {
			if err := s.scalar(&packed, fmt.Sprintf("%s[%d]", path, i), item, fd); err != nil {
				return err
			}
		}
		_ = b.EncodeVarint(key(fd, wireBytes))
		_ = b.EncodeRawBytes(packed.Bytes())
		return nil
	}
	for i, item := range list {
		_ = b.EncodeVarint(key(fd, wire))
		if err := s.scalar(b, fmt.Sprintf("%s[%d]", path, i), item, fd); err != nil {
			return err
		}
	}
	return nil
}

// scalar writes one value of a scalar field, without its key.
func (s *Schema) scalar(b *proto.Buffer, path string, v any, fd *descriptor.FieldDescriptorProto) error {
	switch fd.GetType() {
	case descriptor.FieldDescriptorProto_TYPE_DOUBLE:
		f, ok := toFloat(v)
		if !ok {
			return badType(path, "float64", v)
		}
		_ = b.EncodeFixed64(math.Float64bits(f))
	case descriptor.FieldDescriptorProto_TYPE_FLOAT:
		f, ok := toFloat(v)
		if !ok {
			return badType(path, "float32", v)
		}
		_ = b.EncodeFixed32(uint64(math.Float32bits(float32(f))))
	case descriptor.FieldDescriptorProto_TYPE_INT64, descriptor.FieldDescriptorProto_TYPE_UINT64,
		descriptor.FieldDescriptorProto_TYPE_INT32, descriptor.FieldDescriptorProto_TYPE_UINT32:
		i, ok := toInt64(v)
		if !ok {
			return badType(path, "int", v)
		}
		_ = b.EncodeVarint(uint64(i))
	case descriptor.FieldDescriptorProto_TYPE_SINT32:
		i, ok := toInt64(v)
		if !ok {
			return badType(path, "int", v)
		}
		_ = b.EncodeZigzag32(uint64(i))
	case descriptor.FieldDescriptorProto_TYPE_SINT64:
		i, ok := toInt64(v)
		if !ok {
			return badType(path, "int", v)
		}
		_ = b.EncodeZigzag64(uint64(i))
	case descriptor.FieldDescriptorProto_TYPE_FIXED64, descriptor.FieldDescriptorProto_TYPE_SFIXED64:
		i, ok := toInt64(v)
		if !ok {
			return badType(path, "int", v)
		}
		_ = b.EncodeFixed64(uint64(i))
	case descriptor.FieldDescriptorProto_TYPE_FIXED32, descriptor.FieldDescriptorProto_TYPE_SFIXED32:
		i, ok := toInt64(v)
		if !ok {
			return badType(path, "int", v)
		}
		_ = b.EncodeFixed32(uint64(i))
	case descriptor.FieldDescriptorProto_TYPE_BOOL:
		x, ok := v.(bool)
		if !ok {
			return badType(path, "bool", v)
		}
		n := uint64(0)
		if x {
			n = 1
		}
		_ = b.EncodeVarint(n)
	case descriptor.FieldDescriptorProto_TYPE_ENUM:
		e := s.enums[fd.GetTypeName()]
		if e == nil {
			return fail(path, "cannot resolve enum '%s'", strings.TrimPrefix(fd.GetTypeName(), "."))
		}
		name, ok := v.(string)
		if !ok {
			return badType(path, "enum("+strings.TrimPrefix(fd.GetTypeName(), ".")+")", v)
		}
		for _, val := range e.GetValue() {
			if val.GetName() == name {
				_ = b.EncodeVarint(uint64(val.GetNumber()))
				return nil
			}
		}
		names := make([]string, 0, len(e.GetValue()))
		for _, val := range e.GetValue() {
			names = append(names, val.GetName())
		}
		return fail(path, "unrecognized enum value '%s' for enum '%s' (want one of %s)", name, e.GetName(), strings.Join(names, ", "))
	}
	return nil
}

func scalarName(fd *descriptor.FieldDescriptorProto) string {
	switch fd.GetType() {
	case descriptor.FieldDescriptorProto_TYPE_DOUBLE:
		return "float64"
	case descriptor.FieldDescriptorProto_TYPE_FLOAT:
		return "float32"
	case descriptor.FieldDescriptorProto_TYPE_BOOL:
		return "bool"
	case descriptor.FieldDescriptorProto_TYPE_ENUM:
		return "enum(" + strings.TrimPrefix(fd.GetTypeName(), ".") + ")"
	}
	return "int"
}

func (s *Schema) messageField(b *proto.Buffer, path string, v any, fd *descriptor.FieldDescriptorProto) error {
	if wk, ok := wellKnown(fd.GetTypeName()); ok && !fd.IsRepeated() {
		// Mixer's named encoders work from the type name alone, so a descriptor set without
		// duration.proto still encodes Durations.
		str, ok := v.(string)
		if !ok {
			return fail(path, "message type '%s' got type '%T', want a string", fd.GetTypeName(), v)
		}
		enc, err := wk(str)
		if err != nil {
			return fail(path, "%v", err)
		}
		_ = b.EncodeVarint(key(fd, wireBytes))
		_ = b.EncodeRawBytes(enc)
		return nil
	}
	md := s.messages[fd.GetTypeName()]
	if md == nil {
		return fail(path, "cannot resolve message '%s'", strings.TrimPrefix(fd.GetTypeName(), "."))
	}
	if md.GetOptions().GetMapEntry() {
		m, ok := v.(map[string]any)
		if !ok {
			return badType(path, fmt.Sprintf("map<%s, %s>", typeName(md.GetField()[0]), typeName(md.GetField()[1])), v)
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := s.nested(b, fmt.Sprintf("%s[%s]", path, k), fd, map[string]any{"key": k, "value": m[k]}); err != nil {
				return err
			}
		}
		return nil
	}
	if fd.IsRepeated() {
		list, ok := v.([]any)
		if !ok {
			return badType(path, "[]"+strings.TrimPrefix(fd.GetTypeName(), "."), v)
		}
		for i, item := range list {
			m, ok := item.(map[string]any)
			if !ok {
				return badType(fmt.Sprintf("%s[%d]", path, i), strings.TrimPrefix(fd.GetTypeName(), "."), item)
			}
			if err := s.nested(b, fmt.Sprintf("%s[%d]", path, i), fd, m); err != nil {
				return err
			}
		}
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return badType(path, strings.TrimPrefix(fd.GetTypeName(), "."), v)
	}
	return s.nested(b, path, fd, m)
}

// nested writes a length-delimited sub-message.
func (s *Schema) nested(b *proto.Buffer, path string, fd *descriptor.FieldDescriptorProto, data map[string]any) error {
	var sub proto.Buffer
	if err := s.message(&sub, path, fd.GetTypeName(), data); err != nil {
		return err
	}
	_ = b.EncodeVarint(key(fd, wireBytes))
	_ = b.EncodeRawBytes(sub.Bytes())
	return nil
}

// wellKnown returns the string encoders Mixer registers (namedEncoder.go).
func wellKnown(typeName string) (func(string) ([]byte, error), bool) {
	switch typeName {
	case ".google.protobuf.Duration":
		return func(s string) ([]byte, error) {
			d, err := time.ParseDuration(s)
			if err != nil {
				return nil, err
			}
			return types.DurationProto(d).Marshal()
		}, true
	case ".google.protobuf.Timestamp":
		return func(s string) ([]byte, error) {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return nil, err
			}
			ts, err := types.TimestampProto(t)
			if err != nil {
				return nil, err
			}
			return ts.Marshal()
		}, true
	}
	return nil, false
}

func typeName(fd *descriptor.FieldDescriptorProto) string {
	switch fd.GetType() {
	case descriptor.FieldDescriptorProto_TYPE_MESSAGE, descriptor.FieldDescriptorProto_TYPE_ENUM:
		return strings.Trim(fd.GetTypeName(), ".")
	case descriptor.FieldDescriptorProto_TYPE_STRING:
		return "string"
	}
	return scalarName(fd)
}

func badType(path, want string, got any) error {
	return fail(path, "is of type '%T' instead of expected type '%s'", got, want)
}

// toFloat is Mixer's ToFloat (yaml/castUtil.go): numbers, and whatever toInt64 takes.
func toFloat(v any) (float64, bool) {
	switch c := v.(type) {
	case float32:
		return float64(c), true
	case float64:
		return c, true
	}
	i, ok := toInt64(v)
	return float64(i), ok
}

// toInt64 is Mixer's ToInt64: Go integers, whole float64s (a Struct holds only doubles) and
// strings strconv.ParseInt reads with base 0, so "0x10" is 16.
func toInt64(v any) (int64, bool) {
	switch c := v.(type) {
	case int:
		return int64(c), true
	case int8:
		return int64(c), true
	case int16:
		return int64(c), true
	case int32:
		return int64(c), true
	case int64:
		return c, true
	case float64:
		i := int64(c)
		return i, float64(i) == c
	case string:
		i, err := strconv.ParseInt(c, 0, 64)
		return i, err == nil
	}
	return 0, false
}
