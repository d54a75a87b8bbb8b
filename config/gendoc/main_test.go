package main

import (
	"testing"

	"github.com/gogo/protobuf/protoc-gen-gogo/descriptor"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/config"
)

// TestDefaultsNameRealFields keeps the defaults column honest: every entry
// must name a field of config.proto, as compiled into the generated code.
func TestDefaultsNameRealFields(t *testing.T) {
	file, _ := descriptor.ForMessage(&config.Params{})
	fields := map[string]bool{}
	var walk func(prefix string, m *descriptor.DescriptorProto)
	walk = func(prefix string, m *descriptor.DescriptorProto) {
		for _, f := range m.Field {
			fields[prefix+m.GetName()+"."+f.GetName()] = true
		}
		for _, n := range m.NestedType {
			walk(prefix+m.GetName()+".", n)
		}
	}
	for _, m := range file.MessageType {
		walk("", m)
	}
	require.Contains(t, fields, "Params.MetricInfo.namespace", "the walk itself must find nested fields")
	for key := range defaults {
		require.True(t, fields[key], "defaults names %q, which config.proto does not have", key)
	}
}
