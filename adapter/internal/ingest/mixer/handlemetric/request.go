// Package handlemetric reads a HandleMetricRequest in place: it walks the protobuf
// bytes Mixer sends and hands out views of names, values and dimensions
// without building the Go maps, pointers and strings that generated code
// would allocate for every instance.
//
// It sees the same content as the gogo-generated metricpb.HandleMetricRequest
// Unmarshal, including protobuf's rules for fields that repeat (last one
// wins; a repeated embedded message merges), and rejects every input that
// code rejects. It is stricter on a few malformed encodings that generated
// code tolerates (wire types inside map entries). A fuzz test holds it to
// that.
package handlemetric

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"

	"google.golang.org/grpc/mem"
)

// Field numbers of the metric template messages (mixerpb/proto).
const (
	fieldInstances     = 1
	fieldAdapterConfig = 2
	fieldDedupID       = 3

	fieldInstValue       = 1
	fieldInstDimensions  = 2
	fieldInstMRType      = 3
	fieldInstMRDims      = 4
	fieldInstName        = 72295727
	fieldAnyTypeURL      = 1
	fieldAnyValue        = 2
	fieldMapKey          = 1
	fieldMapValue        = 2
	fieldWrapperValue    = 1 // the single `value` field of IPAddress, Duration, TimeStamp, ...
	fieldDurationSeconds = 1
	fieldDurationNanos   = 2
)

// Kind is the member of istio.policy.v1beta1.Value that is set. Its number is
// the oneof field number, not the ValueType enum number.
type Kind uint8

// The Value members, numbered as their oneof fields.
const (
	KindNone      Kind = 0
	KindString    Kind = 1
	KindInt64     Kind = 2
	KindDouble    Kind = 3
	KindBool      Kind = 4
	KindIPAddress Kind = 5
	KindTimestamp Kind = 6
	KindDuration  Kind = 7
	KindEmail     Kind = 8
	KindDNSName   Kind = 9
	KindURI       Kind = 10
	KindStringMap Kind = 11
)

var kindNames = [...]string{"none", "string", "int64", "double", "bool", "ip_address", "timestamp", "duration", "email_address", "dns_name", "uri", "string_map"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Value is one istio.policy.v1beta1.Value, read in place. Bytes aliases the
// request buffer and is valid only while the Request is.
//
// Kind is last, next to Nanos, so that a Value is 48 bytes rather than 56:
// the Mixer-less mode writes one per evaluated dimension.
type Value struct {
	// Bytes holds the text of string, email, DNS name and URI values, the
	// address bytes of an IP, and the encoded entries of a string map.
	Bytes []byte
	// Int holds int64 values, bools (0 or 1), and the seconds of durations and
	// timestamps.
	Int int64
	// Float holds double values.
	Float float64
	// Nanos holds the nanoseconds of durations and timestamps.
	Nanos int32
	Kind  Kind
}

// Dimension is one entry of an instance's dimensions map.
type Dimension struct {
	Key   []byte
	Value Value
}

// Any is a google.protobuf.Any read in place.
type Any struct {
	Present bool
	TypeURL []byte
	Value   []byte
}

// Instance is one InstanceMsg read in place. Reuse one Instance across calls
// to Request.Instance so that its dimension slice is reused too.
type Instance struct {
	Name       []byte
	Value      Value
	Dimensions []Dimension
}

// Request is a HandleMetricRequest read in place. The zero value is ready for
// Parse; a Request may be reused after Reset.
type Request struct {
	data          []byte
	buf           mem.Buffer
	instances     [][]byte
	AdapterConfig Any
	DedupID       []byte
}

// ErrMalformed wraps every decoding error, so that callers can map it to
// InvalidArgument without matching text.
var ErrMalformed = errors.New("malformed HandleMetricRequest")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// UnmarshalBuffers keeps the received bytes for Parse (it is the gRPC
// codec's in-place decoding hook). It does not parse, so that the server can
// answer a malformed request with InvalidArgument rather than grpc-go's
// Internal. The caller must call Release when done with the request.
func (r *Request) UnmarshalBuffers(data mem.BufferSlice) error {
	r.Release()
	if len(data) == 1 {
		data[0].Ref()
		r.buf = data[0]
	} else {
		r.buf = data.MaterializeToBuffer(mem.DefaultBufferPool())
	}
	return nil
}

// Received is the bytes kept by UnmarshalBuffers.
func (r *Request) Received() []byte {
	if r.buf == nil {
		return nil
	}
	return r.buf.ReadOnlyData()
}

// HeldBytes is what r keeps until Release: the received message
// (grpcserver charges it to the bytes in flight).
func (r *Request) HeldBytes() int { return len(r.Received()) }

// Release gives back the buffer kept by UnmarshalBuffers and resets r.
func (r *Request) Release() {
	if r.buf != nil {
		r.buf.Free()
		r.buf = nil
	}
	r.Reset()
}

// Reset forgets the parsed request but keeps allocated capacity.
func (r *Request) Reset() {
	r.data = nil
	r.instances = r.instances[:0]
	r.AdapterConfig = Any{}
	r.DedupID = nil
}

// Size is the encoded size of the request in bytes.
func (r *Request) Size() int { return len(r.data) }

// Parse reads the top level of a HandleMetricRequest: it finds every
// instance, the adapter config and the dedup id, and checks the framing of
// the whole message. Instances are decoded by Instance.
func (r *Request) Parse(data []byte) error {
	r.data = data
	r.instances = r.instances[:0]
	r.AdapterConfig = Any{}
	r.DedupID = nil
	for b := data; len(b) > 0; {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch num {
		case fieldInstances:
			v, n, err := consumeBytes(b, typ, "instances")
			if err != nil {
				return err
			}
			r.instances = append(r.instances, v)
			b = b[n:]
		case fieldAdapterConfig:
			v, n, err := consumeBytes(b, typ, "adapter_config")
			if err != nil {
				return err
			}
			// A repeated embedded message merges: fields seen later win.
			if err := parseAny(v, &r.AdapterConfig); err != nil {
				return err
			}
			b = b[n:]
		case fieldDedupID:
			v, n, err := consumeBytes(b, typ, "dedup_id")
			if err != nil {
				return err
			}
			r.DedupID = v
			b = b[n:]
		default:
			n, err := skipField(b, typ)
			if err != nil {
				return err
			}
			b = b[n:]
		}
	}
	return nil
}

// ContentHash hashes what the request carries besides its dedup_id and
// adapter_config: its instances, in order, as encoded. Two calls with the
// same content hash the same under one seed.
func (r *Request) ContentHash(seed maphash.Seed) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	var n [binary.MaxVarintLen64]byte
	for _, in := range r.instances {
		_, _ = h.Write(n[:binary.PutUvarint(n[:], uint64(len(in)))])
		_, _ = h.Write(in)
	}
	return h.Sum64()
}

// NumInstances is the number of instances in the request.
func (r *Request) NumInstances() int { return len(r.instances) }

// Instance decodes instance i into in, reusing in's storage.
func (r *Request) Instance(i int, in *Instance) error {
	in.Name = nil
	in.Value = Value{}
	in.Dimensions = in.Dimensions[:0]
	if err := parseInstance(r.instances[i], in); err != nil {
		return fmt.Errorf("instance %d: %w", i, err)
	}
	return nil
}

func parseAny(b []byte, a *Any) error {
	a.Present = true
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch num {
		case fieldAnyTypeURL, fieldAnyValue:
			v, n, err := consumeBytes(b, typ, "adapter_config")
			if err != nil {
				return err
			}
			if num == fieldAnyTypeURL {
				a.TypeURL = v
			} else {
				a.Value = v
			}
			b = b[n:]
		default:
			n, err := skipField(b, typ)
			if err != nil {
				return err
			}
			b = b[n:]
		}
	}
	return nil
}

func parseInstance(b []byte, in *Instance) error {
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch num {
		case fieldInstName, fieldInstMRType:
			v, n, err := consumeBytes(b, typ, "name")
			if err != nil {
				return err
			}
			if num == fieldInstName {
				in.Name = v
			}
			b = b[n:]
		case fieldInstValue:
			v, n, err := consumeBytes(b, typ, "value")
			if err != nil {
				return err
			}
			// Merges into the value read so far, as generated code does.
			if err := parseValue(v, &in.Value); err != nil {
				return fmt.Errorf("value: %w", err)
			}
			b = b[n:]
		case fieldInstDimensions, fieldInstMRDims:
			v, n, err := consumeBytes(b, typ, "dimensions")
			if err != nil {
				return err
			}
			var d Dimension
			if err := parseValueMapEntry(v, &d); err != nil {
				return fmt.Errorf("dimensions: %w", err)
			}
			if num == fieldInstDimensions {
				in.setDimension(d)
			}
			b = b[n:]
		default:
			n, err := skipField(b, typ)
			if err != nil {
				return err
			}
			b = b[n:]
		}
	}
	return nil
}

// setDimension adds d, replacing an earlier entry with the same key as a Go
// map would. Mixer never repeats a key, so the scan is a formality that costs
// a few comparisons per dimension.
func (in *Instance) setDimension(d Dimension) {
	for i := range in.Dimensions {
		if string(in.Dimensions[i].Key) == string(d.Key) {
			in.Dimensions[i] = d
			return
		}
	}
	in.Dimensions = append(in.Dimensions, d)
}

func parseValueMapEntry(b []byte, d *Dimension) error {
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch num {
		case fieldMapKey:
			v, n, err := consumeBytes(b, typ, "map key")
			if err != nil {
				return err
			}
			d.Key = v
			b = b[n:]
		case fieldMapValue:
			v, n, err := consumeBytes(b, typ, "map value")
			if err != nil {
				return err
			}
			// Generated map code builds a fresh value per occurrence.
			d.Value = Value{}
			if err := parseValue(v, &d.Value); err != nil {
				return err
			}
			b = b[n:]
		default:
			n, err := skipField(b, typ)
			if err != nil {
				return err
			}
			b = b[n:]
		}
	}
	return nil
}

// parseValue reads the fields of one Value message into v. Each oneof member
// replaces whatever member was set before.
func parseValue(b []byte, v *Value) error {
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		kind := KindNone
		if num <= int32(KindStringMap) {
			kind = Kind(num)
		}
		switch kind {
		case KindInt64, KindBool:
			if typ != varintType {
				return malformed("%s: wrong wire type %d", kind, typ)
			}
			x, n := consumeVarint(b)
			if n < 0 {
				return malformed("%s: bad varint", kind)
			}
			*v = Value{Kind: kind, Int: int64(x)}
			if kind == KindBool && x != 0 {
				v.Int = 1
			}
			b = b[n:]
		case KindDouble:
			if typ != fixed64Type {
				return malformed("double: wrong wire type %d", typ)
			}
			if len(b) < 8 {
				return malformed("double: unexpected end of data")
			}
			x, n := binary.LittleEndian.Uint64(b), 8
			*v = Value{Kind: KindDouble, Float: math.Float64frombits(x)}
			b = b[n:]
		case KindString, KindIPAddress, KindTimestamp, KindDuration, KindEmail, KindDNSName, KindURI, KindStringMap:
			body, n, err := consumeBytes(b, typ, kind.String())
			if err != nil {
				return err
			}
			*v = Value{Kind: kind}
			if err := parseMember(kind, body, v); err != nil {
				return err
			}
			b = b[n:]
		default:
			n, err := skipField(b, typ)
			if err != nil {
				return err
			}
			b = b[n:]
		}
	}
	return nil
}

// parseMember reads the body of a length-delimited Value member.
func parseMember(kind Kind, body []byte, v *Value) error {
	switch kind {
	case KindString:
		v.Bytes = body
		return nil
	case KindStringMap:
		// Kept encoded; StringMapEntries walks it. Check it now so that a
		// malformed map fails the request, as generated code would.
		v.Bytes = body
		return StringMapEntries(body, func(k, val []byte) {})
	}
	for b := body; len(b) > 0; {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		if num != fieldWrapperValue {
			n, err := skipField(b, typ)
			if err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		inner, n, err := consumeBytes(b, typ, kind.String())
		if err != nil {
			return err
		}
		b = b[n:]
		switch kind {
		case KindTimestamp, KindDuration:
			// google.protobuf.Duration/Timestamp; a repeated one merges.
			if err := parseSecondsNanos(inner, v); err != nil {
				return fmt.Errorf("%s: %w", kind, err)
			}
		default:
			v.Bytes = inner
		}
	}
	return nil
}

func parseSecondsNanos(b []byte, v *Value) error {
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		switch num {
		case fieldDurationSeconds, fieldDurationNanos:
			if typ != varintType {
				return malformed("field %d: wrong wire type %d", num, typ)
			}
			x, n := consumeVarint(b)
			if n < 0 {
				return malformed("field %d: bad varint", num)
			}
			if num == fieldDurationSeconds {
				v.Int = int64(x)
			} else {
				v.Nanos = int32(x)
			}
			b = b[n:]
		default:
			n, err := skipField(b, typ)
			if err != nil {
				return err
			}
			b = b[n:]
		}
	}
	return nil
}

// StringMapEntries calls fn for each entry of an encoded
// istio.policy.v1beta1.StringMap, in wire order (a key may repeat; the last
// one is the map's value).
func StringMapEntries(b []byte, fn func(key, value []byte)) error {
	for len(b) > 0 {
		num, typ, n, err := consumeTag(b)
		if err != nil {
			return err
		}
		b = b[n:]
		if num != fieldWrapperValue {
			n, err := skipField(b, typ)
			if err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		entry, n, err := consumeBytes(b, typ, "string_map entry")
		if err != nil {
			return err
		}
		b = b[n:]
		var key, val []byte
		for e := entry; len(e) > 0; {
			num, typ, n, err := consumeTag(e)
			if err != nil {
				return err
			}
			e = e[n:]
			if num != fieldMapKey && num != fieldMapValue {
				n, err := skipField(e, typ)
				if err != nil {
					return err
				}
				e = e[n:]
				continue
			}
			s, n, err := consumeBytes(e, typ, "string_map entry")
			if err != nil {
				return err
			}
			if num == fieldMapKey {
				key = s
			} else {
				val = s
			}
			e = e[n:]
		}
		fn(key, val)
	}
	return nil
}
