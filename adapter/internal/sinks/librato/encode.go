package librato

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"math"
	"strconv"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
)

// request is one POST's worth of encoded measurements, as the send queue
// holds it: encoded once, at the close of a period, so that retries resend
// the same bytes and the queue holds compact bytes, not structs.
type request struct {
	body         []byte
	gzipped      bool
	measurements int
	instances    int
}

// Units implements export.Request: the queue's capacity counts
// measurements.
func (r *request) Units() int { return r.measurements }

// Instances implements export.Request: the Mixer instances aggregated
// into the request's measurements.
func (r *request) Instances() int { return r.instances }

// spoolCodec writes a request to the spool as a flag byte (gzipped or not)
// and the body: everything needed to send it again, and no credential (the
// token is added at send time).
var spoolCodec = export.Codec[*request]{
	Encode: func(r *request) []byte {
		b := make([]byte, 1, 1+len(r.body))
		if r.gzipped {
			b[0] = 1
		}
		return append(b, r.body...)
	},
	Decode: func(p []byte, units, instances int) (*request, error) {
		if len(p) < 1 || p[0] > 1 {
			return nil, errors.New("librato: not a spooled request")
		}
		return &request{body: p[1:], gzipped: p[0] == 1, measurements: units, instances: instances}, nil
	},
}

// encoder turns the points of one close into requests of at most maxUnits
// measurements and, where possible, maxBytes bytes of (uncompressed) JSON. A
// single measurement larger than maxBytes goes in a request of its own:
// it cannot be split, and dropping it would lose data the service may well
// accept.
type encoder struct {
	legacy   bool
	maxUnits int
	maxBytes int
	gzip     bool
	time     int64 // Unix seconds: the start of the period
	period   int64 // seconds; tagged API only
	source   string
	// drop counts a point that cannot be encoded.
	drop func(reason string, instances int)
}

// chunk accumulates the encoded measurements of one request.
type chunk struct {
	gauges, counters [][]byte // legacy: both lists; tagged: gauges only
	bytes            int
	instances        int
}

func (c *chunk) len() int { return len(c.gauges) + len(c.counters) }

func (e *encoder) encode(points []point) []*request {
	head := e.head()
	// The most a request adds around head and its measurements: the list
	// openings and closings (both lists on legacy) and the final brace.
	overhead := len(`,"measurements":[]}`)
	if e.legacy {
		overhead = len(`,"gauges":[],"counters":[]}`)
	}
	var out []*request
	var c chunk
	for i := range points {
		p := &points[i]
		b, counter, ok := e.measurement(p)
		if !ok {
			e.drop(DropValueOutOfRange, int(p.acc.n))
			continue
		}
		// +1 for a comma; n measurements need n-1 of them.
		grow := len(b) + 1
		if c.len() > 0 && (c.len()+1 > e.maxUnits || len(head)+overhead+c.bytes+grow-1 > e.maxBytes) {
			out = append(out, e.finish(head, &c))
			c = chunk{}
		}
		if counter {
			c.counters = append(c.counters, b)
		} else {
			c.gauges = append(c.gauges, b)
		}
		c.bytes += grow
		c.instances += int(p.acc.n)
	}
	if c.len() > 0 {
		out = append(out, e.finish(head, &c))
	}
	return out
}

// head is the request's opening up to its first list.
func (e *encoder) head() []byte {
	var b []byte
	if e.legacy {
		b = append(b, `{"measure_time":`...)
		b = strconv.AppendInt(b, e.time, 10)
		b = append(b, `,"source":`...)
		src, _ := json.Marshal(e.source)
		b = append(b, src...)
		return b
	}
	b = append(b, `{"time":`...)
	b = strconv.AppendInt(b, e.time, 10)
	b = append(b, `,"period":`...)
	b = strconv.AppendInt(b, e.period, 10)
	return b
}

func (e *encoder) finish(head []byte, c *chunk) *request {
	var buf bytes.Buffer
	buf.Grow(len(head) + c.bytes + 32)
	buf.Write(head)
	writeList := func(key string, items [][]byte) {
		buf.WriteString(`,"` + key + `":[`)
		for i, m := range items {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.Write(m)
		}
		buf.WriteByte(']')
	}
	if e.legacy {
		if len(c.gauges) > 0 {
			writeList("gauges", c.gauges)
		}
		if len(c.counters) > 0 {
			writeList("counters", c.counters)
		}
	} else {
		writeList("measurements", c.gauges)
	}
	buf.WriteByte('}')
	r := &request{body: buf.Bytes(), measurements: c.len(), instances: c.instances}
	if e.gzip {
		var z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.DefaultCompression)
		_, _ = zw.Write(r.body) // writes to a bytes.Buffer do not fail
		_ = zw.Close()
		r.body, r.gzipped = z.Bytes(), true
	}
	return r
}

// measurement encodes one point, reporting whether it goes in the legacy
// counters list, or false when a statistic is out of the API's range. The
// series' name and tags (or source) were encoded once, with its identity:
// only the numbers are formatted per period.
func (e *encoder) measurement(p *point) (b []byte, counter, ok bool) {
	a := &p.acc
	b = make([]byte, 0, len(p.id.prefix)+112)
	b = append(b, p.id.prefix...)
	if p.time != 0 && p.time != e.time {
		// A series whose value for the request's time was already sent
		// (sink.timeOf) carries its own.
		if e.legacy {
			b = append(b, `,"measure_time":`...)
		} else {
			b = append(b, `,"time":`...)
		}
		b = strconv.AppendInt(b, p.time, 10)
	}
	switch {
	case p.kind == sinks.Counter && e.legacy:
		// Legacy counters are cumulative (§2): the running total.
		return appendField(b, "value", p.total, true), true, ValidValue(p.total)
	case p.kind == sinks.Counter:
		// The tagged API has no counters: a gauge of the period's sum. A
		// summary would make Librato's default "average" show the mean
		// increment instead.
		return appendField(b, "value", a.sum, true), false, ValidValue(a.sum)
	case p.kind == sinks.Gauge:
		return appendField(b, "value", a.last, true), false, ValidValue(a.last)
	}
	// DISTRIBUTION and implicit metrics: a summary. The legacy API has no
	// last but takes sum_squares, optional and so left out when out of range.
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, a.n, 10)
	b = appendField(b, "sum", a.sum, false)
	b = appendField(b, "min", a.min, false)
	b = appendField(b, "max", a.max, false)
	if e.legacy {
		if ValidValue(a.sumSq) {
			b = appendField(b, "sum_squares", a.sumSq, false)
		}
	} else {
		b = appendField(b, "last", a.last, false)
	}
	b = append(b, '}')
	return b, false, ValidValue(a.sum) && ValidValue(a.min) && ValidValue(a.max) && ValidValue(a.last)
}

// appendField appends ,"key":v and, when last, the closing brace.
func appendField(b []byte, key string, v float64, last bool) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	b = appendFloat(b, v)
	if last {
		b = append(b, '}')
	}
	return b
}

// appendFloat formats v as encoding/json does: the shortest representation,
// in exponent form only for very large or small magnitudes. v is finite
// (the handler refuses NaN and infinities; out-of-range points are dropped
// by the caller, which checks after encoding).
func appendFloat(b []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(b, '0') // never sent: ValidValue fails for it
	}
	abs := math.Abs(v)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, v, format, -1, 64)
	if format == 'e' {
		// 1e-07 becomes 1e-7, as encoding/json writes it.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// prefixOf encodes the part of a measurement that never changes for a
// series: its name and its tags (tagged API) or its source (legacy, when it
// differs from the request's), without the closing brace.
func prefixOf(name string, tags map[string]string, source string) []byte {
	v := struct {
		Name   string            `json:"name"`
		Tags   map[string]string `json:"tags,omitempty"`
		Source string            `json:"source,omitempty"`
	}{name, tags, source}
	b, err := json.Marshal(v) // strings and a string map: cannot fail
	if err != nil {
		panic(err)
	}
	return b[:len(b)-1]
}
