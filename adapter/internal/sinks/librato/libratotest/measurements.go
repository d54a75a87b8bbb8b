package libratotest

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
)

// The wire structs spell the API's field names independently of the librato
// package's types, so that a wrong JSON tag there fails against the fake
// instead of agreeing with it. Numbers stay json.Number so that range errors
// become 400s naming the field, as the service reports them, rather than a
// decode failure.
type wireMeasurements struct {
	Tags         map[string]string `json:"tags"`
	Time         *json.Number      `json:"time"`
	Period       *json.Number      `json:"period"`
	Measurements []wireMeasurement `json:"measurements"`
}

type wireMeasurement struct {
	Name       *string           `json:"name"`
	Tags       map[string]string `json:"tags"`
	Time       *json.Number      `json:"time"`
	Period     *json.Number      `json:"period"`
	Value      *json.Number      `json:"value"`
	Count      *json.Number      `json:"count"`
	Sum        *json.Number      `json:"sum"`
	Min        *json.Number      `json:"min"`
	Max        *json.Number      `json:"max"`
	Last       *json.Number      `json:"last"`
	Stddev     *json.Number      `json:"stddev"`
	Attributes *struct {
		Aggregate *bool `json:"aggregate"`
	} `json:"attributes"`
}

// paramErrors is the "params" part of an error body: messages by attribute.
type paramErrors map[string]librato.Messages

func (p paramErrors) add(key, format string, args ...any) {
	p[key] = append(p[key], fmt.Sprintf(format, args...))
}

// Point is an accepted tagged measurement. Its Tags, Time and Period are the
// effective ones: the measurement's own, else the request's top-level ones
// (Time and Period are 0 when neither was sent). Tags are lower-cased, as
// the service stores them, and values below librato.MinAbsValue are 0.
type Point struct {
	librato.Measurement
	Request uint64 // Seq of the Request that carried it
}

func (s *Server) parseMeasurements(body []byte) ([]Point, paramErrors, error) {
	var req wireMeasurements
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, nil, err
	}
	errs := paramErrors{}
	v := validator{errs: errs, cfg: &s.cfg, now: s.cfg.now()}
	topTime := v.time("time", req.Time)
	topPeriod := v.period("period", req.Period)
	// An empty top-level set is the same as none: it only matters if a
	// measurement lacks its own.
	var topTags map[string]string
	if len(req.Tags) > 0 {
		topTags = v.tags("tags", req.Tags)
	}
	switch n := len(req.Measurements); {
	case n == 0:
		errs.add("measurements", "is not present")
	case n > s.cfg.maxMeasurements:
		// Validating each would only bury the one error that matters.
		errs.add("measurements", "has %d measurements, more than the limit of %d", n, s.cfg.maxMeasurements)
		return nil, errs, nil
	}

	points := make([]Point, 0, len(req.Measurements))
	for i, wm := range req.Measurements {
		key := fmt.Sprintf("measurements[%d]", i)
		var m librato.Measurement
		m.Name = v.metricName(key+".name", wm.Name)

		// Per-measurement tags replace the top-level ones, never merge (§3);
		// an explicit empty object replaces them with nothing.
		if wm.Tags != nil {
			m.Tags = v.tags(key+".tags", wm.Tags)
		} else {
			m.Tags = topTags
			if len(topTags) == 0 {
				errs.add(key+".tags", "is not present")
			}
		}

		m.Time, m.Period = topTime, topPeriod
		if wm.Time != nil {
			m.Time = v.time(key+".time", wm.Time)
		}
		if wm.Period != nil {
			m.Period = v.period(key+".period", wm.Period)
		}

		m.Value = v.float(key+".value", wm.Value)
		m.Count = v.count(key+".count", wm.Count)
		m.Sum = v.float(key+".sum", wm.Sum)
		m.Min = v.float(key+".min", wm.Min)
		m.Max = v.float(key+".max", wm.Max)
		m.Last = v.float(key+".last", wm.Last)
		m.Stddev = v.float(key+".stddev", wm.Stddev)
		if wm.Count != nil {
			if wm.Sum == nil {
				errs.add(key+".sum", "is required when count is set")
			}
			if wm.Value != nil {
				errs.add(key+".value", "must be absent when count is set")
			}
		} else if wm.Value == nil {
			errs.add(key+".value", "is not present")
		}
		if wm.Attributes != nil && wm.Attributes.Aggregate != nil {
			m.Attributes = &librato.Attributes{Aggregate: *wm.Attributes.Aggregate}
		}
		points = append(points, Point{Measurement: m})
	}
	if len(errs) > 0 {
		return nil, errs, nil
	}
	return points, nil, nil
}

// validator checks fields and collects their errors, returning the
// converted values so that parsing and checking stay in one pass.
type validator struct {
	errs paramErrors
	cfg  *config
	now  time.Time
}

func (v validator) metricName(key string, name *string) string {
	switch {
	case name == nil || *name == "":
		v.errs.add(key, "is not present")
	case !librato.ValidMetricName(*name):
		v.errs.add(key, "is invalid: must match ^[A-Za-z0-9.:_-]{1,255}$")
	default:
		return *name
	}
	return ""
}

// tags checks a tag set and returns it lower-cased, as the service stores it.
// Names that only differ in case would become one tag with an arbitrary
// value, so the fake rejects them rather than record something
// nondeterministic.
func (v validator) tags(key string, tags map[string]string) map[string]string {
	if len(tags) == 0 {
		v.errs.add(key, "must have at least one tag")
		return nil
	}
	if len(tags) > v.cfg.maxTags {
		v.errs.add(key, "has %d tags, more than the limit of %d", len(tags), v.cfg.maxTags)
	}
	out := make(map[string]string, len(tags))
	for name, value := range tags {
		if !librato.ValidTagName(name) {
			v.errs.add(key, "tag name %q is invalid: must match ^[-.:_\\w]{1,64}$", name)
		}
		if !librato.ValidTagValue(value) {
			v.errs.add(key, "value %q of tag %q is invalid: must match ^[-.:_?\\\\/\\w ]{1,255}$", value, name)
		}
		lower := strings.ToLower(name)
		if _, dup := out[lower]; dup {
			v.errs.add(key, "tag name %q repeats another once lower-cased", name)
		}
		out[lower] = strings.ToLower(value)
	}
	return out
}

func (v validator) int(key string, n *json.Number) (int64, bool) {
	if n == nil {
		return 0, false
	}
	i, err := n.Int64()
	if err != nil {
		v.errs.add(key, "is not an integer")
		return 0, false
	}
	return i, true
}

// time checks a Unix-seconds time against the window, if one is set.
func (v validator) time(key string, n *json.Number) int64 {
	t, ok := v.int(key, n)
	if !ok {
		return 0
	}
	switch {
	case t < 0:
		v.errs.add(key, "is negative")
	case v.cfg.maxAge > 0 && t < v.now.Add(-v.cfg.maxAge).Unix():
		v.errs.add(key, "is too far in the past")
	case v.cfg.maxFuture > 0 && t > v.now.Add(v.cfg.maxFuture).Unix():
		v.errs.add(key, "is too far in the future")
	}
	return t
}

func (v validator) period(key string, n *json.Number) int64 {
	p, ok := v.int(key, n)
	if ok && p <= 0 {
		v.errs.add(key, "must be a positive number of seconds")
	}
	return p
}

func (v validator) count(key string, n *json.Number) *int64 {
	c, ok := v.int(key, n)
	if !ok {
		return nil
	}
	if c < 0 {
		v.errs.add(key, "is negative")
	}
	return &c
}

// float applies the documented float range (§4): a magnitude above
// librato.MaxAbsValue is rejected, one below librato.MinAbsValue becomes 0.
func (v validator) float(key string, n *json.Number) *float64 {
	if n == nil {
		return nil
	}
	f, err := strconv.ParseFloat(n.String(), 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		v.errs.add(key, "is not a number")
		return nil
	case err != nil || !librato.ValidValue(f):
		v.errs.add(key, "is out of range: magnitude above %g", librato.MaxAbsValue)
		return nil
	}
	if math.Abs(f) < librato.MinAbsValue {
		f = 0
	}
	return &f
}
