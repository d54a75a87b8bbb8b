package expr

import (
	"fmt"
	"strings"
)

// CompileParam compiles one instance param bound for an istio.policy.v1beta1.Value field
// (a metric's value or a dimension), given as a YAML decoder produced it.
//
// Mixer's rule (mixer/pkg/protobuf/yaml/dynamic/valueTypeEncoder.go, valueTypeEncoderBuilder):
//   - a YAML number is a DOUBLE constant: params travel as a google.protobuf.Struct, whose
//     numbers are all float64 (mixer/pkg/runtime/config/converter.go), so `value: 1` is 1.0;
//   - a YAML bool is a BOOL constant;
//   - a string of at least two characters that starts and ends with the same kind of quote,
//     ' or ", is a STRING constant with just those two characters removed and no escapes
//     interpreted (transformQuotedString), so '"abc"' is abc and '"10s"' stays a string;
//   - any other string is an expression whose inferred type picks the Value member, so
//     "200" is INT64 and "request.size | 0" is INT64.
//
// STRING_MAP expressions are refused: Mixer registers no Value encoder for them.
func CompileParam(v any, manifest Manifest) (*Expr, error) {
	switch x := v.(type) {
	case bool:
		return constant(fmt.Sprint(x), Bool, x), nil
	case float64:
		return constant(fmt.Sprint(x), Double, x), nil
	case float32:
		return constant(fmt.Sprint(x), Double, float64(x)), nil
	case int:
		return constant(fmt.Sprint(x), Double, float64(x)), nil
	case int64:
		return constant(fmt.Sprint(x), Double, float64(x)), nil
	case int32:
		return constant(fmt.Sprint(x), Double, float64(x)), nil
	case uint64:
		return constant(fmt.Sprint(x), Double, float64(x)), nil
	case uint:
		return constant(fmt.Sprint(x), Double, float64(x)), nil
	case string:
		if s, ok := quoted(x); ok {
			return constant(x, String, s), nil
		}
		e, err := Compile(x, manifest)
		if err != nil {
			return nil, err
		}
		if e.Type() == StringMap {
			return nil, &Error{Expr: x, Msg: "unsupported type: STRING_MAP cannot be sent as an istio.policy.v1beta1.Value"}
		}
		return e, nil
	}
	return nil, fmt.Errorf("unsupported param value %v of type %T: want a string, number or bool", v, v)
}

func quoted(s string) (string, bool) {
	if len(s) < 2 {
		return "", false
	}
	for _, q := range []string{`"`, `'`} {
		if strings.HasPrefix(s, q) && strings.HasSuffix(s, q) {
			return s[1 : len(s)-1], true
		}
	}
	return "", false
}
