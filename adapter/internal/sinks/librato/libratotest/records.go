package libratotest

import (
	"maps"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
)

// Stats counts requests by what happened to them.
type Stats struct {
	Requests       int         // requests that reached the handler
	ByStatus       map[int]int // responses sent, by status code
	Accepted       int         // tagged measurements recorded
	LegacyAccepted int         // legacy gauges and counters recorded
	// Overwritten counts measurements that replaced a stored one of the
	// same series and time (a request sent again counts each of its
	// measurements); Conflicts counts those whose values differed, whose
	// earlier value is thus lost.
	Overwritten, Conflicts int
	Resets                 int // requests answered by closing the connection
	Refused                int // connections reset on accept while down
	Abandoned              int // requests whose client left during injected latency
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.ByStatus = maps.Clone(s.stats.ByStatus)
	inj := s.Injector.Stats()
	st.Resets, st.Refused, st.Abandoned = inj.Resets, inj.Refused, inj.Abandoned
	return st
}

// StatusCount is the number of responses sent with code.
func (s *Server) StatusCount(code int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats.ByStatus[code]
}

// Requests returns the most recent requests (see WithRecentRequests),
// oldest first, whatever their outcome.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.recent))
	for i, r := range s.recent {
		r.Header = r.Header.Clone()
		out[i] = r
	}
	return out
}

// LastRequest returns the most recent request, if any.
func (s *Server) LastRequest() (Request, bool) {
	reqs := s.Requests()
	if len(reqs) == 0 {
		return Request{}, false
	}
	return reqs[len(reqs)-1], true
}

// Measurements returns every accepted tagged measurement in arrival order.
func (s *Server) Measurements() []Point {
	return s.points0(func(Point) bool { return true })
}

// Series returns the accepted measurements of one series: name compared
// case-insensitively, as the service does, and exactly the tag set tags
// (compared lower-cased, as stored).
func (s *Server) Series(name string, tags map[string]string) []Point {
	want := make(map[string]string, len(tags))
	for k, v := range tags {
		want[strings.ToLower(k)] = strings.ToLower(v)
	}
	return s.points0(func(p Point) bool { return strings.EqualFold(p.Name, name) && maps.Equal(p.Tags, want) })
}

// SumOfValues adds up what one series observed: each measurement's sum when
// it is a summary, else its value.
func (s *Server) SumOfValues(name string, tags map[string]string) float64 {
	var total float64
	for _, p := range s.Series(name, tags) {
		total += observed(p.Measurement)
	}
	return total
}

// Total is SumOfValues over every series of name.
func (s *Server) Total(name string) float64 {
	var total float64
	for _, p := range s.named(name) {
		total += observed(p.Measurement)
	}
	return total
}

// Count is the number of observations of name over every series: the sum
// of the counts of summaries, plus one for each plain value.
func (s *Server) Count(name string) int64 {
	var n int64
	for _, p := range s.named(name) {
		if p.Count != nil {
			n += *p.Count
		} else {
			n++
		}
	}
	return n
}

func (s *Server) named(name string) []Point {
	return s.points0(func(p Point) bool { return strings.EqualFold(p.Name, name) })
}

// observed is what one measurement adds to a total: a summary's sum (count
// requires it), else the value.
func observed(m librato.Measurement) float64 {
	switch {
	case m.Count != nil && m.Sum != nil:
		return *m.Sum
	case m.Value != nil:
		return *m.Value
	}
	return 0
}

func (s *Server) points0(keep func(Point) bool) []Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Point
	for _, p := range s.points {
		if keep(p) {
			out = append(out, clonePoint(p))
		}
	}
	return out
}

// LegacyPoints returns every accepted legacy gauge and counter in arrival
// order, gauges before counters within a request.
func (s *Server) LegacyPoints() []LegacyPoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]LegacyPoint, len(s.legacy))
	for i, p := range s.legacy {
		out[i] = cloneLegacy(p)
	}
	return out
}

// LegacyGaugeTotal adds up what the gauges named name observed: each sum
// of a summary, else the value.
func (s *Server) LegacyGaugeTotal(name string) float64 {
	var total float64
	for _, p := range s.LegacyPoints() {
		if p.Kind != Gauge || !strings.EqualFold(p.Name, name) {
			continue
		}
		if p.Sum != nil {
			total += *p.Sum
		} else if p.Value != nil {
			total += *p.Value
		}
	}
	return total
}

// LegacyCounterLast is the latest value (by measure_time, then arrival) of
// the counter name from source. Counters are cumulative (§2), so this is
// the running total, not a sum of the values sent.
func (s *Server) LegacyCounterLast(name, source string) (float64, bool) {
	var last *LegacyPoint
	points := s.LegacyPoints()
	for i, p := range points {
		if p.Kind != Counter || !strings.EqualFold(p.Name, name) || !strings.EqualFold(p.Source, source) {
			continue
		}
		if last == nil || p.MeasureTime >= last.MeasureTime {
			last = &points[i]
		}
	}
	if last == nil {
		return 0, false
	}
	return *last.Value, true
}

// ResetRecords forgets accepted measurements, requests and statistics;
// faults stay as they are.
func (s *Server) ResetRecords() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.points, s.legacy, s.recent = nil, nil, nil
	s.pointAt, s.legacyAt = map[string]int{}, map[string]int{}
	s.stats = Stats{ByStatus: map[int]int{}}
}

func clonePoint(p Point) Point {
	p.Tags = maps.Clone(p.Tags)
	p.Value, p.Count, p.Sum, p.Min, p.Max, p.Last, p.Stddev =
		clone(p.Value), clone(p.Count), clone(p.Sum), clone(p.Min), clone(p.Max), clone(p.Last), clone(p.Stddev)
	if p.Attributes != nil {
		a := *p.Attributes
		p.Attributes = &a
	}
	return p
}

func cloneLegacy(p LegacyPoint) LegacyPoint {
	p.timed = false
	p.Value, p.Count, p.Sum, p.Min, p.Max, p.SumSquares =
		clone(p.Value), clone(p.Count), clone(p.Sum), clone(p.Min), clone(p.Max), clone(p.SumSquares)
	return p
}

func clone[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
