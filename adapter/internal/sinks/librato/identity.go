package librato

import (
	"slices"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// FallbackTag is the tag a measurement gets when it would otherwise have
// none: AppOptics refuses a measurement without tags (§3), and a metric
// without labels, constant tags or a replica tag has none.
const (
	FallbackTagName  = "meshmetrics"
	FallbackTagValue = "true"
)

// Sanitisation reasons, the reason label of
// meshmetrics_librato_sanitized_total. Each counts metric definitions (per
// Bind) or series (once, when the series is first sent) that needed the
// alteration; lower-casing is not counted, since the service lower-cases tags
// itself.
const (
	SanitizedNameReplaced   = "metric_name_replaced"
	SanitizedNameTruncated  = "metric_name_truncated"
	SanitizedTagReplaced    = "tag_replaced"
	SanitizedTagTruncated   = "tag_truncated"
	SanitizedTagEmpty       = "tag_empty"       // an empty label value: the tag is left out
	SanitizedTagDuplicate   = "tag_duplicate"   // two labels sanitise to one tag name, or a label shadows a constant tag
	SanitizedTagOverLimit   = "tag_over_limit"  // beyond 50 tags: the first 50 names in byte order are kept
	SanitizedFallbackTag    = "fallback_tag"    // no tag at all: FallbackTag was added
	SanitizedSourceReplaced = "source_replaced" // legacy source
	SanitizedSourceTrunc    = "source_truncated"
	SanitizedSourceReserved = "source_reserved"
)

// DropValueOutOfRange is the drop reason of a point with a statistic the API
// would refuse (a magnitude above MaxAbsValue): sending it would get the
// whole request a 400.
const DropValueOutOfRange = telemetry.DropValueOutOfRange

// metricName is a metric's name in Librato: namespace.name, or the bare
// name of an implicit metric.
func metricName(m *sinks.Metric) (string, Reason) {
	name := m.Name
	if m.Namespace != "" {
		name = m.Namespace + "." + m.Name
	}
	return SanitizeMetricName(name)
}

// rawTags pairs a series' label values with their names: the metric's label
// names, or the name/value pairs of an implicit metric.
func rawTags(m *sinks.Metric, labels []string) map[string]string {
	tags := make(map[string]string, len(labels))
	if m.Implicit {
		for i := 0; i+1 < len(labels); i += 2 {
			tags[labels[i]] = labels[i+1]
		}
		return tags
	}
	for i, v := range labels {
		if i < len(m.LabelNames) {
			tags[m.LabelNames[i]] = v
		}
	}
	return tags
}

// identify works out where a series lands in Librato and counts what had to
// change on the way. Called once per series, under the sink's lock.
func (s *Sink) identify(kind sinks.Kind, name string, m *sinks.Metric, labels []string) *ident {
	tags, rep := SanitizeTagsLimit(rawTags(m, labels), MaxTagsPerMeasurement)
	s.countReason(rep.Altered.Has(ReasonReplaced), SanitizedTagReplaced)
	s.countReason(rep.Altered.Has(ReasonTruncated), SanitizedTagTruncated)
	s.countReason(rep.Empty > 0, SanitizedTagEmpty)
	id := &ident{name: name}
	var key strings.Builder
	key.WriteString(kind.String())
	key.WriteByte(0)
	key.WriteString(strings.ToLower(name)) // names are case-insensitive
	key.WriteByte(0)
	names := sortedKeys(tags)
	if s.cfg.legacy {
		// The legacy API has no tags: the series' tags become part of its
		// source, so that series stay apart and a wildcard source filter
		// (meshmetrics-0:*, *:response_code.500*) selects them.
		var src strings.Builder
		src.WriteString(s.cfg.source)
		for _, k := range names {
			src.WriteByte(':')
			src.WriteString(k)
			src.WriteByte('.')
			src.WriteString(tags[k])
		}
		s.countReason(rep.Duplicate > 0, SanitizedTagDuplicate)
		s.countReason(rep.OverLimit > 0, SanitizedTagOverLimit)
		source, r := SanitizeSource(src.String())
		s.countReason(r.Has(ReasonReplaced), SanitizedSourceReplaced)
		s.countReason(r.Has(ReasonTruncated), SanitizedSourceTrunc)
		s.countReason(r.Has(ReasonReserved), SanitizedSourceReserved)
		id.source = source
		key.WriteString(source)
		id.key = key.String()
		if source == s.cfg.source {
			source = "" // the request's top-level source applies
		}
		id.prefix = prefixOf(name, nil, source)
		return id
	}

	out := make(map[string]string, min(len(s.cfg.tags)+len(tags), MaxTagsPerMeasurement))
	for k, v := range s.cfg.tags {
		out[k] = v
	}
	var dup, over int
	for _, k := range names {
		switch _, taken := out[k]; {
		case taken:
			dup++ // the configured tag wins: it is the operator's explicit choice
		case len(out) >= MaxTagsPerMeasurement:
			over++
		default:
			out[k] = tags[k]
		}
	}
	s.countReason(dup > 0 || rep.Duplicate > 0, SanitizedTagDuplicate)
	s.countReason(over > 0 || rep.OverLimit > 0, SanitizedTagOverLimit)
	if len(out) == 0 {
		out[FallbackTagName] = FallbackTagValue
		s.countReason(true, SanitizedFallbackTag)
	}
	for _, k := range sortedKeys(out) {
		key.WriteString(k)
		key.WriteByte(1)
		key.WriteString(out[k])
		key.WriteByte(0)
	}
	id.tags = out
	id.key = key.String()
	id.prefix = prefixOf(name, out, "")
	return id
}

func (s *Sink) countReason(cond bool, reason string) {
	if cond {
		s.env.Metrics.LibratoSanitized.WithLabelValues(s.name, reason).Inc()
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
