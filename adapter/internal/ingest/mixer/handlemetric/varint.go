package handlemetric

// The readers below follow the rules of gogo-generated Unmarshal code rather
// than protowire's stricter ones, so that the reader accepts exactly the
// inputs the generated metricpb code accepts: a 10-byte varint keeps its low
// 64 bits, a tag's field number is truncated to int32, and group markers are
// only counted, not matched.

type wireType uint8

const (
	varintType     wireType = 0
	fixed64Type    wireType = 1
	bytesType      wireType = 2
	startGroupType wireType = 3
	endGroupType   wireType = 4
	fixed32Type    wireType = 5
)

// consumeVarint returns the value and the bytes read, or n < 0 on error.
func consumeVarint(b []byte) (uint64, int) {
	var v uint64
	for i, shift := 0, uint(0); ; i, shift = i+1, shift+7 {
		if shift >= 64 {
			return 0, -1
		}
		if i >= len(b) {
			return 0, -1
		}
		c := b[i]
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, i + 1
		}
	}
}

// consumeTag returns the field number and wire type of the tag at b.
func consumeTag(b []byte) (int32, wireType, int, error) {
	x, n := consumeVarint(b)
	if n < 0 {
		return 0, 0, 0, malformed("bad tag")
	}
	num, typ := int32(x>>3), wireType(x&7)
	if typ == endGroupType {
		return 0, 0, 0, malformed("end group for non-group")
	}
	if num <= 0 {
		return 0, 0, 0, malformed("illegal tag %d (wire type %d)", num, typ)
	}
	return num, typ, n, nil
}

// consumeBytes reads a length-delimited field body.
func consumeBytes(b []byte, typ wireType, what string) ([]byte, int, error) {
	if typ != bytesType {
		return nil, 0, malformed("%s: wrong wire type %d", what, typ)
	}
	x, n := consumeVarint(b)
	if n < 0 {
		return nil, 0, malformed("%s: bad length", what)
	}
	l := int(x)
	if l < 0 || n+l < 0 {
		return nil, 0, malformed("%s: negative length", what)
	}
	if n+l > len(b) {
		return nil, 0, malformed("%s: unexpected end of data", what)
	}
	return b[n : n+l], n + l, nil
}

// skipField skips the value of a field whose tag has been read, the way
// generated code skips unknown fields (groups included).
func skipField(b []byte, typ wireType) (int, error) {
	depth := 0
	i := 0
	for {
		switch typ {
		case varintType:
			_, n := consumeVarint(b[i:])
			if n < 0 {
				return 0, malformed("bad varint in unknown field")
			}
			i += n
		case fixed64Type:
			if len(b)-i < 8 {
				return 0, malformed("unexpected end of data")
			}
			i += 8
		case fixed32Type:
			if len(b)-i < 4 {
				return 0, malformed("unexpected end of data")
			}
			i += 4
		case bytesType:
			_, n, err := consumeBytes(b[i:], bytesType, "unknown field")
			if err != nil {
				return 0, err
			}
			i += n
		case startGroupType:
			depth++
		case endGroupType:
			if depth == 0 {
				return 0, malformed("unexpected end of group")
			}
			depth--
		default:
			return 0, malformed("illegal wire type %d", typ)
		}
		if depth == 0 {
			return i, nil
		}
		x, n := consumeVarint(b[i:])
		if n < 0 {
			return 0, malformed("bad tag in group")
		}
		i += n
		typ = wireType(x & 7)
	}
}
