package expr

import (
	"fmt"
	"strconv"
)

// ValueType is the type of an attribute or expression. The numbers match the
// istio.policy.v1beta1.ValueType enum so they can be put on the wire unchanged.
type ValueType int

// The value types of istio.policy.v1beta1.ValueType.
const (
	Unspecified  ValueType = 0
	String       ValueType = 1
	Int64        ValueType = 2
	Double       ValueType = 3
	Bool         ValueType = 4
	Timestamp    ValueType = 5
	IPAddress    ValueType = 6
	EmailAddress ValueType = 7
	URI          ValueType = 8
	DNSName      ValueType = 9
	Duration     ValueType = 10
	StringMap    ValueType = 11
)

// String returns the proto enum name, e.g. "INT64".
func (t ValueType) String() string {
	switch t {
	case Unspecified:
		return "VALUE_TYPE_UNSPECIFIED"
	case String:
		return "STRING"
	case Int64:
		return "INT64"
	case Double:
		return "DOUBLE"
	case Bool:
		return "BOOL"
	case Timestamp:
		return "TIMESTAMP"
	case IPAddress:
		return "IP_ADDRESS"
	case EmailAddress:
		return "EMAIL_ADDRESS"
	case URI:
		return "URI"
	case DNSName:
		return "DNS_NAME"
	case Duration:
		return "DURATION"
	case StringMap:
		return "STRING_MAP"
	}
	return "ValueType(" + strconv.Itoa(int(t)) + ")"
}

// ParseValueType accepts a proto enum name such as "STRING" or "IP_ADDRESS".
// VALUE_TYPE_UNSPECIFIED is refused because no attribute can have it.
func ParseValueType(name string) (ValueType, error) {
	for t := String; t <= StringMap; t++ {
		if t.String() == name {
			return t, nil
		}
	}
	return Unspecified, fmt.Errorf("unknown value type %q", name)
}

// stringLike reports whether values of t are Go strings. Mixer's IL keeps all of
// these as il.String (compiler.go, toIlType), which decides which operators work.
func (t ValueType) stringLike() bool {
	return t == String || t == EmailAddress || t == URI || t == DNSName
}

// Manifest maps attribute names to their types, as attributemanifest CRs declare them.
type Manifest map[string]ValueType

// Bag supplies attribute values during evaluation. Get reports false for an absent attribute.
//
// Values must have the Go type of their ValueType: string for STRING, EMAIL_ADDRESS, URI and
// DNS_NAME; int64 for INT64; float64 for DOUBLE; bool for BOOL; time.Time for TIMESTAMP;
// time.Duration for DURATION; []byte or net.IP for IP_ADDRESS; map[string]string for STRING_MAP.
// As in Mixer's interpreter, INT64 and DURATION attributes accept either int64 or time.Duration.
type Bag interface {
	Get(name string) (any, bool)
}

// MapBag is a Bag backed by a map.
type MapBag map[string]any

// Get implements Bag.
func (b MapBag) Get(name string) (any, bool) {
	v, ok := b[name]
	return v, ok
}
