package libratotest

import (
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
)

// The store keeps one value per series and time, as the service does: a
// value stored again for a series and time replaces the earlier one, in
// place (arrival order is that of the first value). A measurement without
// a time is always kept: the service stamps it with the time it arrives.

// storePointLocked records an accepted tagged measurement. Under mu.
func (s *Server) storePointLocked(p Point) {
	if p.Time == 0 {
		s.points = append(s.points, p)
		return
	}
	key := pointKey(p.Measurement)
	if i, ok := s.pointAt[key]; ok {
		s.stats.Overwritten++
		if !sameMeasurement(s.points[i].Measurement, p.Measurement) {
			s.stats.Conflicts++
		}
		s.points[i] = p
		return
	}
	s.pointAt[key] = len(s.points)
	s.points = append(s.points, p)
}

// storeLegacyLocked records an accepted legacy gauge or counter. Under mu.
func (s *Server) storeLegacyLocked(p LegacyPoint) {
	if !p.timed {
		s.legacy = append(s.legacy, p)
		return
	}
	key := string(p.Kind) + "\x00" + strings.ToLower(p.Name) + "\x00" + strings.ToLower(p.Source) + "\x00" +
		strconv.FormatInt(p.MeasureTime, 10)
	if i, ok := s.legacyAt[key]; ok {
		s.stats.Overwritten++
		old := s.legacy[i]
		if !same(old.Value, p.Value) || !same(old.Count, p.Count) || !same(old.Sum, p.Sum) || !same(old.Min, p.Min) ||
			!same(old.Max, p.Max) || !same(old.SumSquares, p.SumSquares) {
			s.stats.Conflicts++
		}
		s.legacy[i] = p
		return
	}
	s.legacyAt[key] = len(s.legacy)
	s.legacy = append(s.legacy, p)
}

// pointKey identifies a tagged series and time: the name compared
// case-insensitively and the tag set, lower-cased as stored.
func pointKey(m librato.Measurement) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(m.Name))
	for _, k := range slices.Sorted(maps.Keys(m.Tags)) {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(m.Tags[k])
	}
	b.WriteByte(0)
	b.WriteString(strconv.FormatInt(m.Time, 10))
	return b.String()
}

func sameMeasurement(a, b librato.Measurement) bool {
	return same(a.Value, b.Value) && same(a.Count, b.Count) && same(a.Sum, b.Sum) && same(a.Min, b.Min) &&
		same(a.Max, b.Max) && same(a.Last, b.Last) && same(a.Stddev, b.Stddev)
}

func same[T int64 | float64](a, b *T) bool {
	switch {
	case a == nil || b == nil:
		return a == nil && b == nil
	}
	if fa, ok := any(*a).(float64); ok {
		return math.Float64bits(fa) == math.Float64bits(any(*b).(float64))
	}
	return *a == *b
}
