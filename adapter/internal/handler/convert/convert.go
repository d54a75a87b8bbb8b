// Package convert turns istio.policy.v1beta1 values into metric values and
// label text, with one documented rule per Value member and no allocation for
// the members Mixer sends most (strings, int64, double, bool, durations).
//
// As a metric value:
//
//	int64, double       the number (NaN and ±Inf are rejected)
//	bool                1 or 0
//	string              parsed as a decimal or hex float ("12", "0.5", "1e3"); else rejected
//	duration            seconds, as a float; the caller scales it to the metric's unit
//	timestamp           seconds since the Unix epoch, as a float
//	IP, email, DNS name, URI, string map, and a missing value: rejected
//
// As label text:
//
//	string, email, DNS name, URI   the text
//	int64                           base 10
//	double                          shortest decimal that reads back exactly ('f' form, as Istio's adapter)
//	bool                            "true" / "false"
//	IP                              dotted quad or RFC 5952 IPv6 text; other lengths as hex
//	timestamp                       RFC 3339 in UTC with nanoseconds when non-zero
//	duration                        Go duration text ("1.5s", "250ms")
//	string map                      entries sorted by key, "k1=v1&k2=v2" (as Istio's adapter)
//	missing value                   ""
package convert

import (
	"encoding/hex"
	"errors"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"time"
	"unsafe"

	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
)

// Reason says why a value could not be used. It is a small integer so that
// callers can count rejections by reason without formatting text.
type Reason uint8

// The reasons a value is rejected.
const (
	OK Reason = iota
	// MissingValue: the instance carries no value.
	MissingValue
	// NotNumeric: the member has no numeric meaning, or a string is not a number.
	NotNumeric
	// NonFinite: NaN or an infinity.
	NonFinite
)

var reasonNames = [...]string{"ok", "missing_value", "not_numeric", "non_finite"}

// String is the reason's metric label value.
func (r Reason) String() string { return reasonNames[r] }

// Number converts v to a metric value. Durations come back in seconds with
// isDuration set, so that the caller can apply the metric's unit.
func Number(v handlemetric.Value) (x float64, isDuration bool, r Reason) {
	switch v.Kind {
	case handlemetric.KindInt64:
		return float64(v.Int), false, OK
	case handlemetric.KindDouble:
		x = v.Float
	case handlemetric.KindBool:
		return float64(v.Int), false, OK
	case handlemetric.KindDuration:
		return float64(v.Int) + float64(v.Nanos)/1e9, true, OK
	case handlemetric.KindTimestamp:
		return float64(v.Int) + float64(v.Nanos)/1e9, false, OK
	case handlemetric.KindString:
		if len(v.Bytes) == 0 {
			return 0, false, NotNumeric
		}
		// The string does not outlive this call: ParseFloat's error, which
		// would keep it, is dropped.
		f, err := strconv.ParseFloat(unsafe.String(&v.Bytes[0], len(v.Bytes)), 64)
		if err != nil && !isRangeError(err) {
			return 0, false, NotNumeric
		}
		x = f
	case handlemetric.KindNone:
		return 0, false, MissingValue
	default:
		return 0, false, NotNumeric
	}
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0, false, NonFinite
	}
	return x, false, OK
}

func isRangeError(err error) bool {
	return errors.Is(err, strconv.ErrRange)
}

// AppendLabel appends the label text of v to dst.
func AppendLabel(dst []byte, v handlemetric.Value) []byte {
	switch v.Kind {
	case handlemetric.KindString, handlemetric.KindEmail, handlemetric.KindDNSName, handlemetric.KindURI:
		return append(dst, v.Bytes...)
	case handlemetric.KindInt64:
		return strconv.AppendInt(dst, v.Int, 10)
	case handlemetric.KindDouble:
		return strconv.AppendFloat(dst, v.Float, 'f', -1, 64)
	case handlemetric.KindBool:
		return strconv.AppendBool(dst, v.Int != 0)
	case handlemetric.KindIPAddress:
		return appendIP(dst, v.Bytes)
	case handlemetric.KindTimestamp:
		return time.Unix(v.Int, int64(v.Nanos)).UTC().AppendFormat(dst, time.RFC3339Nano)
	case handlemetric.KindDuration:
		return append(dst, (time.Duration(v.Int)*time.Second + time.Duration(v.Nanos)).String()...)
	case handlemetric.KindStringMap:
		return appendStringMap(dst, v.Bytes)
	}
	return dst
}

func appendIP(dst, b []byte) []byte {
	switch len(b) {
	case 4:
		return netip.AddrFrom4([4]byte(b)).AppendTo(dst)
	case 16:
		// An IPv4-mapped address prints as dotted quad, as net.IP does.
		return netip.AddrFrom16([16]byte(b)).Unmap().AppendTo(dst)
	}
	return hex.AppendEncode(dst, b)
}

func appendStringMap(dst, encoded []byte) []byte {
	m := map[string]string{}
	// The value was checked when the request was read.
	_ = handlemetric.StringMapEntries(encoded, func(k, v []byte) { m[string(k)] = string(v) })
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, '&')
		}
		dst = append(append(append(dst, k...), '='), m[k]...)
	}
	return dst
}
