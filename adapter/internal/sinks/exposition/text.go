package exposition

import (
	"io"
	"math"
	"sort"
	"strconv"

	"github.com/meshmetrics/meshmetrics/adapter/internal/series"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
)

// TextContentType is the content type of WriteText's output (text format
// 0.0.4, which every Prometheus scrapes).
const TextContentType = "text/plain; version=0.0.4; charset=utf-8"

// snap is one series copied out of the registry for a scrape.
type snap struct {
	labels  string
	sum     float64
	count   uint64
	buckets []uint64
}

// WriteText writes every series in the Prometheus text format: families in
// name order, each with HELP and TYPE, series in label order. Each metric is
// copied under the registry lock (values and the prebuilt label text) and
// formatted after it is released, so ingest is held up for the copy only.
func (e *Sink) WriteText(w io.Writer) error {
	buf := make([]byte, 0, 64<<10)
	var snaps []snap
	var counts []uint64
	for _, f := range e.families() {
		snaps, counts = f.snapshot(e.series, snaps[:0], counts[:0])
		if len(snaps) == 0 {
			continue
		}
		sort.Slice(snaps, func(i, j int) bool { return snaps[i].labels < snaps[j].labels })
		buf = f.appendHeader(buf)
		for i := range snaps {
			buf = f.appendSeries(buf, &snaps[i])
			if len(buf) >= 48<<10 {
				if _, err := w.Write(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
		}
	}
	_, err := w.Write(buf)
	return err
}

// snapshot copies the family's series. Histogram bucket counts go to one
// shared slice, cumulated.
func (f *family) snapshot(reg *series.Registry[*state], snaps []snap, counts []uint64) ([]snap, []uint64) {
	hist := f.kind == sinks.Distribution
	reg.EachIn(f.fam, func(s *series.Series[*state]) {
		st := s.State
		if !st.ready {
			return
		}
		snaps = append(snaps, snap{labels: st.labels, sum: st.Sum, count: st.Count})
		if hist {
			counts = st.AppendCumulative(counts)
		}
	})
	if hist {
		n := len(f.bounds)
		for i := range snaps {
			snaps[i].buckets = counts[i*n : (i+1)*n : (i+1)*n]
		}
	}
	return snaps, counts
}

func (f *family) appendHeader(b []byte) []byte {
	b = append(b, "# HELP "...)
	b = append(b, f.names.Name...)
	b = append(b, ' ')
	b = appendEscaped(b, f.help, false)
	b = append(b, "\n# TYPE "...)
	b = append(b, f.names.Name...)
	switch f.kind {
	case sinks.Counter:
		b = append(b, " counter\n"...)
	case sinks.Gauge:
		b = append(b, " gauge\n"...)
	default:
		b = append(b, " histogram\n"...)
	}
	return b
}

func (f *family) appendSeries(b []byte, s *snap) []byte {
	if f.kind != sinks.Distribution {
		b = appendLine(b, f.names.Name, "", s.labels, "", s.sum)
		return b
	}
	for i, c := range s.buckets {
		b = appendLine(b, f.names.Name, "_bucket", s.labels, f.le[i], float64(c))
	}
	b = appendLine(b, f.names.Name, "_bucket", s.labels, "+Inf", float64(s.count))
	b = appendLine(b, f.names.Name, "_sum", s.labels, "", s.sum)
	return appendLine(b, f.names.Name, "_count", s.labels, "", float64(s.count))
}

// appendLine writes `name{labels,le="x"} value`.
func appendLine(b []byte, name, suffix, labels, le string, v float64) []byte {
	b = append(b, name...)
	b = append(b, suffix...)
	if labels != "" || le != "" {
		b = append(b, '{')
		b = append(b, labels...)
		if le != "" {
			if labels != "" {
				b = append(b, ',')
			}
			b = append(b, `le="`...)
			b = append(b, le...)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = appendFloat(b, v)
	return append(b, '\n')
}

// appendFloat formats a sample value as the text format expects, as
// client_golang's encoder does.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case v == 1:
		return append(b, '1')
	case v == 0:
		return append(b, '0')
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// appendEscaped escapes a label value (backslash, double quote, newline) or a
// HELP text (backslash, newline).
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '"' && quote:
			b = append(b, '\\', '"')
		default:
			b = append(b, c)
		}
	}
	return b
}
