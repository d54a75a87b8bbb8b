package libratotest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
)

// LegacyKind tells gauges from counters.
type LegacyKind string

// The kinds of legacy measurement.
const (
	Gauge   LegacyKind = "gauge"
	Counter LegacyKind = "counter"
)

// LegacyPoint is an accepted legacy measurement, with the request's
// top-level source and measure_time applied. MeasureTime defaults to the
// receive time, as the service does (§2); Source is "" when neither the
// measurement nor the request named one.
type LegacyPoint struct {
	Kind        LegacyKind
	Name        string
	Source      string
	MeasureTime int64
	Value       *float64
	Count       *int64
	Sum         *float64
	Min         *float64
	Max         *float64
	SumSquares  *float64
	Request     uint64 // Seq of the Request that carried it
	// timed: the request gave the time; a value stamped with its arrival
	// time is never taken for another of the same time.
	timed bool
}

type wireLegacy struct {
	MeasureTime *json.Number
	Source      *string
	Gauges      []wireLegacyMeasurement
	Counters    []wireLegacyMeasurement
}

type wireLegacyMeasurement struct {
	Name        *string      `json:"name"`
	Value       *json.Number `json:"value"`
	Count       *json.Number `json:"count"`
	Sum         *json.Number `json:"sum"`
	Min         *json.Number `json:"min"`
	Max         *json.Number `json:"max"`
	SumSquares  *json.Number `json:"sum_squares"`
	Source      *string      `json:"source"`
	MeasureTime *json.Number `json:"measure_time"`
}

func parseLegacyJSON(body []byte) (*wireLegacy, error) {
	var top struct {
		MeasureTime *json.Number    `json:"measure_time"`
		Source      *string         `json:"source"`
		Gauges      json.RawMessage `json:"gauges"`
		Counters    json.RawMessage `json:"counters"`
	}
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, err
	}
	req := &wireLegacy{MeasureTime: top.MeasureTime, Source: top.Source}
	var err error
	if req.Gauges, err = parseLegacyList(top.Gauges); err != nil {
		return nil, fmt.Errorf("gauges: %w", err)
	}
	if req.Counters, err = parseLegacyList(top.Counters); err != nil {
		return nil, fmt.Errorf("counters: %w", err)
	}
	return req, nil
}

// parseLegacyList accepts the array form and the object form keyed by
// metric name (§2); the object form is ordered by name for determinism.
func parseLegacyList(raw json.RawMessage) ([]wireLegacyMeasurement, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] == '[' {
		var list []wireLegacyMeasurement
		err := json.Unmarshal(raw, &list)
		return list, err
	}
	var byName map[string]wireLegacyMeasurement
	if err := json.Unmarshal(raw, &byName); err != nil {
		return nil, err
	}
	return fromGroups(byName), nil
}

// fromGroups orders keyed measurements, numerically for form indexes and
// by name otherwise, and takes a missing name from a non-numeric key.
func fromGroups(groups map[string]wireLegacyMeasurement) []wireLegacyMeasurement {
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		ia, errA := strconv.Atoi(a)
		ib, errB := strconv.Atoi(b)
		if errA == nil && errB == nil {
			return ia - ib
		}
		return strings.Compare(a, b)
	})
	out := make([]wireLegacyMeasurement, 0, len(keys))
	for _, k := range keys {
		m := groups[k]
		if _, err := strconv.Atoi(k); m.Name == nil && err != nil {
			m.Name = &k
		}
		out = append(out, m)
	}
	return out
}

// formKey matches the form encoding's gauges[0][name]=... keys.
var formKey = regexp.MustCompile(`^(gauges|counters)\[([^\]]+)\]\[([a-z_]+)\]$`)

func parseLegacyForm(body []byte) (*wireLegacy, error) {
	values, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, err
	}
	req := &wireLegacy{}
	if v, ok := values["measure_time"]; ok {
		n := json.Number(v[0])
		req.MeasureTime = &n
	}
	if v, ok := values["source"]; ok {
		req.Source = &v[0]
	}
	groups := map[string]map[string]wireLegacyMeasurement{"gauges": {}, "counters": {}}
	for key, vals := range values {
		m := formKey.FindStringSubmatch(key)
		if m == nil {
			continue
		}
		kind, group, field, val := m[1], m[2], m[3], vals[0]
		g := groups[kind][group]
		num := json.Number(val)
		switch field {
		case "name":
			g.Name = &val
		case "source":
			g.Source = &val
		case "value":
			g.Value = &num
		case "count":
			g.Count = &num
		case "sum":
			g.Sum = &num
		case "min":
			g.Min = &num
		case "max":
			g.Max = &num
		case "sum_squares":
			g.SumSquares = &num
		case "measure_time":
			g.MeasureTime = &num
		}
		groups[kind][group] = g
	}
	req.Gauges = fromGroups(groups["gauges"])
	req.Counters = fromGroups(groups["counters"])
	return req, nil
}

func (s *Server) validateLegacy(req *wireLegacy) ([]LegacyPoint, paramErrors) {
	errs := paramErrors{}
	now := s.cfg.now()
	v := validator{errs: errs, cfg: &s.cfg, now: now}
	topTime := now.Unix()
	if req.MeasureTime != nil {
		topTime = v.time("measure_time", req.MeasureTime)
	}
	topTimed := req.MeasureTime != nil
	topSource := ""
	if req.Source != nil {
		topSource = v.source("source", *req.Source)
	}
	switch n := len(req.Gauges) + len(req.Counters); {
	case n == 0:
		errs.add("measurements", "is not present: send at least one gauge or counter")
	case n > s.cfg.maxLegacy:
		errs.add("measurements", "has %d measurements, more than the limit of %d", n, s.cfg.maxLegacy)
		return nil, errs
	}

	points := make([]LegacyPoint, 0, len(req.Gauges)+len(req.Counters))
	lists := []struct {
		kind LegacyKind
		list []wireLegacyMeasurement
	}{{Gauge, req.Gauges}, {Counter, req.Counters}}
	for _, l := range lists {
		kind := l.kind
		for i, wm := range l.list {
			key := fmt.Sprintf("%ss[%d]", kind, i)
			p := LegacyPoint{
				Kind:        kind,
				Name:        v.metricName(key+".name", wm.Name),
				Source:      topSource,
				MeasureTime: topTime,
				Value:       v.float(key+".value", wm.Value),
				timed:       topTimed || wm.MeasureTime != nil,
			}
			if wm.Source != nil {
				p.Source = v.source(key+".source", *wm.Source)
			}
			if wm.MeasureTime != nil {
				p.MeasureTime = v.time(key+".measure_time", wm.MeasureTime)
			}
			summary := wm.Count != nil || wm.Sum != nil || wm.Min != nil || wm.Max != nil || wm.SumSquares != nil
			switch {
			case kind == Counter && summary:
				errs.add(key, "counters take a value only")
			case kind == Counter && wm.Value == nil:
				errs.add(key+".value", "is not present")
			case wm.Count != nil:
				p.Count = v.count(key+".count", wm.Count)
				p.Sum = v.float(key+".sum", wm.Sum)
				p.Min = v.float(key+".min", wm.Min)
				p.Max = v.float(key+".max", wm.Max)
				p.SumSquares = v.float(key+".sum_squares", wm.SumSquares)
				if wm.Sum == nil {
					errs.add(key+".sum", "is required when count is set")
				}
				if wm.Value != nil {
					errs.add(key+".value", "must be absent when count is set")
				}
			case wm.Value == nil:
				errs.add(key+".value", "is not present")
			case summary:
				errs.add(key+".count", "is required with summary fields")
			}
			points = append(points, p)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return points, nil
}

func (v validator) source(key, s string) string {
	switch {
	case strings.EqualFold(s, librato.ReservedSource):
		v.errs.add(key, "is reserved")
	case !librato.ValidSource(s):
		v.errs.add(key, "is invalid: 1-255 of A-Za-z0-9.:_-")
	}
	return s
}
