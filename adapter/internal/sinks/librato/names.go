package librato

import (
	"cmp"
	"slices"
	"strings"
	"unicode/utf8"
)

// Name and tag rules (§4):
//
//	metric name  ^[A-Za-z0-9.:_-]{1,255}$   case-insensitive
//	tag name     ^[-.:_\w]{1,64}$           lower-cased by the service
//	tag value    ^[-.:_?\\/\w ]{1,255}$     lower-cased by the service
//	source       [A-Za-z0-9.:_-], 1-255, case-insensitive, "all" reserved (§2)
//
// \w is ASCII [A-Za-z0-9_], so every valid string is ASCII. The Valid*
// functions are exactly the API's checks; the Sanitize* functions turn any
// string into one that passes them, so that a bad label costs one altered or
// dropped tag rather than a 400 for the whole batch.
const (
	MaxMetricNameLen      = 255
	MaxTagNameLen         = 64
	MaxTagValueLen        = 255
	MaxSourceLen          = 255
	MaxTagsPerMeasurement = 50
)

// ReservedSource is the source name the legacy API reserves (§2).
const ReservedSource = "all"

// Replacement stands in for every character a rule does not allow. It is
// valid in all four rules, so replacing never produces an invalid string.
const Replacement = '_'

// Reason is a set of the alterations a sanitiser made, so that the sink can
// count them; zero means the input was already valid and is returned as is.
type Reason uint8

// The alterations. ReasonEmpty means the result is empty and must be
// dropped; the others leave a valid, non-empty result.
const (
	ReasonReplaced   Reason = 1 << iota // characters outside the rule became Replacement
	ReasonTruncated                     // cut to the maximum length
	ReasonLowercased                    // upper-case letters lower-cased, as the service would
	ReasonEmpty                         // empty input: drop it
	ReasonReserved                      // a reserved name was renamed
)

// Has reports whether r includes all of f.
func (r Reason) Has(f Reason) bool { return r&f == f }

// Dropped reports whether the sanitised result is unusable.
func (r Reason) Dropped() bool { return r&ReasonEmpty != 0 }

// String lists the alterations, e.g. "replaced|truncated", or "none".
func (r Reason) String() string {
	if r == 0 {
		return "none"
	}
	var b strings.Builder
	for f := ReasonReplaced; f <= ReasonReserved; f <<= 1 {
		if r&f == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('|')
		}
		switch f {
		case ReasonReplaced:
			b.WriteString("replaced")
		case ReasonTruncated:
			b.WriteString("truncated")
		case ReasonLowercased:
			b.WriteString("lowercased")
		case ReasonEmpty:
			b.WriteString("empty")
		case ReasonReserved:
			b.WriteString("reserved")
		}
	}
	return b.String()
}

// isNameByte is the class of metric names, tag names and sources:
// [A-Za-z0-9.:_-], which equals [-.:_\w].
func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == '.' || c == ':' || c == '-'
}

// isTagValueByte is the class of tag values: [-.:_?\\/\w ].
func isTagValueByte(c byte) bool {
	return isNameByte(c) || c == '?' || c == '\\' || c == '/' || c == ' '
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }

// clean reports whether s has 1..maxLen bytes, all allowed (and none upper
// case when lower is set): whether sanitize would return it unchanged.
func clean(s string, maxLen int, allowed func(byte) bool, lower bool) bool {
	if len(s) == 0 || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !allowed(c) || lower && isUpper(c) {
			return false
		}
	}
	return true
}

// ValidMetricName reports whether s matches ^[A-Za-z0-9.:_-]{1,255}$.
func ValidMetricName(s string) bool { return clean(s, MaxMetricNameLen, isNameByte, false) }

// ValidTagName reports whether s matches ^[-.:_\w]{1,64}$. Upper case is
// valid; the service lower-cases it.
func ValidTagName(s string) bool { return clean(s, MaxTagNameLen, isNameByte, false) }

// ValidTagValue reports whether s matches ^[-.:_?\\/\w ]{1,255}$. Upper case
// is valid; the service lower-cases it.
func ValidTagValue(s string) bool { return clean(s, MaxTagValueLen, isTagValueByte, false) }

// ValidSource reports whether s is a valid legacy source name: 1-255 of
// [A-Za-z0-9.:_-] and not "all" in any case.
func ValidSource(s string) bool {
	return clean(s, MaxSourceLen, isNameByte, false) && !strings.EqualFold(s, ReservedSource)
}

// sanitize maps s to the rule given by maxLen and allowed. The fast path
// only reads, so a valid input costs no allocation. Otherwise each rune (or
// each byte of invalid UTF-8) outside the class becomes one Replacement, so
// the result is ASCII and can be cut at any byte, and the prefix is kept
// because it usually carries the most significant part of a dotted name.
func sanitize(s string, maxLen int, allowed func(byte) bool, lower bool) (string, Reason) {
	if len(s) == 0 {
		return "", ReasonEmpty
	}
	if clean(s, maxLen, allowed, lower) {
		return s, 0
	}
	var b strings.Builder
	b.Grow(min(len(s), maxLen))
	var r Reason
	for _, c := range s {
		if b.Len() == maxLen {
			r |= ReasonTruncated
			break
		}
		switch {
		case c < utf8.RuneSelf && allowed(byte(c)):
			if lower && isUpper(byte(c)) {
				c += 'a' - 'A'
				r |= ReasonLowercased
			}
			b.WriteByte(byte(c))
		default:
			b.WriteByte(Replacement)
			r |= ReasonReplaced
		}
	}
	return b.String(), r
}

// SanitizeMetricName returns a valid metric name for s. Case is kept: metric
// names are case-insensitive, so lower-casing would only change how they
// display.
func SanitizeMetricName(s string) (string, Reason) {
	return sanitize(s, MaxMetricNameLen, isNameByte, false)
}

// SanitizeTagName returns a valid, lower-cased tag name for s. It lower-cases
// because the service does: two names differing only in case are one tag.
func SanitizeTagName(s string) (string, Reason) {
	return sanitize(s, MaxTagNameLen, isNameByte, true)
}

// SanitizeTagValue returns a valid, lower-cased tag value for s.
func SanitizeTagValue(s string) (string, Reason) {
	return sanitize(s, MaxTagValueLen, isTagValueByte, true)
}

// SanitizeSource returns a valid legacy source name for s. The reserved
// "all" gets a Replacement appended instead of being dropped, because a
// measurement without a source would silently fall back to the request's.
func SanitizeSource(s string) (string, Reason) {
	out, r := sanitize(s, MaxSourceLen, isNameByte, false)
	if strings.EqualFold(out, ReservedSource) {
		return out + string(Replacement), r | ReasonReserved
	}
	return out, r
}

// TagReport counts what SanitizeTags changed, for the sink's counters.
type TagReport struct {
	Altered     Reason // union of the alterations made to the kept tags
	AlteredTags int    // kept tags whose name or value was altered
	Empty       int    // tags dropped for an empty name or value
	Duplicate   int    // tags dropped because another tag sanitised to the same name
	OverLimit   int    // tags dropped beyond the limit
}

// Dropped is the number of tags dropped for any reason.
func (r TagReport) Dropped() int { return r.Empty + r.Duplicate + r.OverLimit }

// Changed reports whether the result differs from the input.
func (r TagReport) Changed() bool { return r.AlteredTags > 0 || r.Dropped() > 0 }

// SanitizeTags is SanitizeTagsLimit with MaxTagsPerMeasurement.
func SanitizeTags(tags map[string]string) (map[string]string, TagReport) {
	return SanitizeTagsLimit(tags, MaxTagsPerMeasurement)
}

// SanitizeTagsLimit returns a valid tag set of at most limit tags (clamped to
// 1..MaxTagsPerMeasurement) for tags. When tags is already valid it is
// returned itself, without allocating; otherwise the result is a new map and
// tags is not modified.
//
// The result does not depend on map iteration order: names and values are
// sanitised, tags with an empty name or value dropped, and the rest sorted by
// sanitised name, then by original name. Of tags whose names sanitise to the
// same name, the one whose original name sorts first in byte order wins
// (upper case sorts before lower case, so "Zone" beats "zone"). Beyond the
// limit, the first limit names in sorted order are kept and the rest dropped.
//
// An empty result is returned as is: AppOptics needs at least one tag per
// measurement, which the caller must supply.
func SanitizeTagsLimit(tags map[string]string, limit int) (map[string]string, TagReport) {
	if limit <= 0 || limit > MaxTagsPerMeasurement {
		limit = MaxTagsPerMeasurement
	}
	if tagsClean(tags, limit) {
		return tags, TagReport{}
	}
	type entry struct {
		name, value, orig string
		r                 Reason
	}
	var rep TagReport
	entries := make([]entry, 0, len(tags))
	for k, v := range tags {
		name, rn := SanitizeTagName(k)
		value, rv := SanitizeTagValue(v)
		if rn.Dropped() || rv.Dropped() {
			rep.Empty++
			continue
		}
		entries = append(entries, entry{name: name, value: value, orig: k, r: rn | rv})
	}
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(strings.Compare(a.name, b.name), strings.Compare(a.orig, b.orig))
	})
	out := make(map[string]string, min(len(entries), limit))
	for i, e := range entries {
		switch {
		case i > 0 && e.name == entries[i-1].name:
			rep.Duplicate++
		case len(out) == limit:
			rep.OverLimit++
		default:
			out[e.name] = e.value
			if e.r != 0 {
				rep.AlteredTags++
				rep.Altered |= e.r
			}
		}
	}
	return out, rep
}

// tagsClean reports whether SanitizeTagsLimit would return tags unchanged:
// at most limit tags, every name and value valid and lower-case.
func tagsClean(tags map[string]string, limit int) bool {
	if len(tags) > limit {
		return false
	}
	for k, v := range tags {
		if !clean(k, MaxTagNameLen, isNameByte, true) || !clean(v, MaxTagValueLen, isTagValueByte, true) {
			return false
		}
	}
	return true
}
