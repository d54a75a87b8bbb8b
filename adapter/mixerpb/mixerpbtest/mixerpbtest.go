// Package mixerpbtest builds Mixer wire messages for tests: typed values and
// instances, as Mixer would fill them.
package mixerpbtest

import (
	"fmt"
	"time"

	"github.com/gogo/protobuf/types"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/metricpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
)

// Str is a string_value.
func Str(s string) *policypb.Value {
	return &policypb.Value{Value: &policypb.Value_StringValue{StringValue: s}}
}

// Int is an int64_value.
func Int(i int64) *policypb.Value {
	return &policypb.Value{Value: &policypb.Value_Int64Value{Int64Value: i}}
}

// Double is a double_value.
func Double(f float64) *policypb.Value {
	return &policypb.Value{Value: &policypb.Value_DoubleValue{DoubleValue: f}}
}

// Duration is a duration_value.
func Duration(d time.Duration) *policypb.Value {
	return &policypb.Value{Value: &policypb.Value_DurationValue{DurationValue: &policypb.Duration{Value: types.DurationProto(d)}}}
}

// Instance is an instance with its dimensions given as name/value pairs:
// Instance("requestcount.instance.istio-system", Int(1), "path", Str("/a")).
func Instance(name string, v *policypb.Value, dims ...any) *metricpb.InstanceMsg {
	if len(dims)%2 != 0 {
		panic(fmt.Sprintf("mixerpbtest.Instance(%q): dimensions come in name/value pairs", name))
	}
	m := &metricpb.InstanceMsg{Name: name, Value: v, Dimensions: map[string]*policypb.Value{}}
	for i := 0; i < len(dims); i += 2 {
		m.Dimensions[dims[i].(string)] = dims[i+1].(*policypb.Value)
	}
	return m
}
