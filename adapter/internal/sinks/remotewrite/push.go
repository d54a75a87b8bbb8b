package remotewrite

import (
	"math"
	"time"

	"github.com/golang/snappy"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/series"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/prompb"
)

// point is the value of one series at push time, copied under the registry
// lock; labels are shared (they never change).
type point struct {
	info    *metricInfo
	base    []prompb.Label
	sum     float64
	count   uint64
	buckets []uint64 // cumulative, finite buckets
}

// push sends the current value of every series. Timestamps come from now
// but strictly increase from push to push, so that no series is ever sent
// twice with one timestamp. Series removed since the last push go first:
// their final value at T and a stale marker at T+1; live series follow at
// T+2 (at T when nothing was removed), so a series removed and created
// again in between ends and restarts in order. With final, every live
// series also gets a stale marker after its value.
func (s *Sink) push(now time.Time, final bool) {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	t := max(now.UnixMilli(), s.lastTS+1)

	// Take the removed series before reading the live ones: a series removed
	// in between is then live in this push and removed in the next one,
	// never the other way round.
	s.remMu.Lock()
	removed := s.removed
	s.removed = nil
	s.remMu.Unlock()

	live := s.build.live[:0]
	counts := s.build.counts[:0]
	s.reg.Each(func(_ *series.Family[*state], ser *series.Series[*state]) {
		st := ser.State
		if st.info == nil {
			return
		}
		p := point{info: st.info, base: st.base, sum: st.Sum, count: st.Count}
		if st.info.kind == sinks.Distribution {
			start := len(counts)
			counts = st.AppendCumulative(counts)
			p.buckets = counts[start:len(counts):len(counts)]
		}
		live = append(live, p)
	})
	// counts may have moved while growing: point the buckets at the final
	// array (same offsets).
	off := 0
	for i := range live {
		if n := len(live[i].buckets); n > 0 {
			live[i].buckets = counts[off : off+n : off+n]
			off += n
		}
	}

	b := &s.build
	for i := range removed {
		b.point(&removed[i], t, true)
	}
	last := t - 1
	if len(removed) > 0 {
		last = t + 1
	}
	liveT := last + 1
	for i := range live {
		b.point(&live[i], liveT, final)
	}
	if len(live) > 0 {
		last = liveT
		if final {
			last = liveT + 1
		}
	}
	b.flush()
	if last >= t {
		s.lastTS = last
	}
	// Keep the buffers for the next push, without holding on to labels.
	clear(live)
	s.build.live, s.build.counts = live[:0], counts[:0]
}

// builder cuts the samples of a push into requests of at most max samples,
// reusing its buffers from request to request.
type builder struct {
	max int
	put func(*request)

	req     prompb.WriteRequest
	labels  []prompb.Label
	samples []prompb.Sample
	n       int
	body    []byte

	live   []point
	counts []uint64
}

// point adds the series of p: one for a counter or gauge, the buckets, sum
// and count of a histogram. Each gets its value at t, and with stale also a
// stale marker at t+1.
func (b *builder) point(p *point, t int64, stale bool) {
	info := p.info
	if info.kind != sinks.Distribution {
		b.series(p.base, info.names.Name, "", p.sum, t, stale)
		return
	}
	bucket := info.names.Exposed[1]
	for i, c := range p.buckets {
		b.series(p.base, bucket, info.les[i], float64(c), t, stale)
	}
	b.series(p.base, bucket, "+Inf", float64(p.count), t, stale)
	b.series(p.base, info.names.Exposed[2], "", p.sum, t, stale)
	b.series(p.base, info.names.Exposed[3], "", float64(p.count), t, stale)
}

func (b *builder) series(base []prompb.Label, name, le string, v float64, t int64, stale bool) {
	k := 1
	if stale {
		k = 2
	}
	if b.n+k > b.max {
		b.flush()
	}
	start := len(b.labels)
	b.labels = mergeLabels(b.labels, base, name, le)
	sStart := len(b.samples)
	b.samples = append(b.samples, prompb.Sample{Value: v, Timestamp: t})
	if stale {
		b.samples = append(b.samples, prompb.Sample{Value: math.Float64frombits(StaleNaN), Timestamp: t + 1})
	}
	// When an arena grows, the series already added keep pointing at the
	// old array, whose contents stay as they were: no fix-up is needed.
	b.req.Timeseries = append(b.req.Timeseries, prompb.TimeSeries{
		Labels:  b.labels[start:len(b.labels):len(b.labels)],
		Samples: b.samples[sStart:len(b.samples):len(b.samples)],
	})
	b.n += k
}

// mergeLabels appends base with __name__ (and le when set) inserted in
// name order.
func mergeLabels(dst, base []prompb.Label, name, le string) []prompb.Label {
	extra := [2]prompb.Label{{Name: "__name__", Value: name}, {Name: "le", Value: le}}
	ex := extra[:1]
	if le != "" {
		ex = extra[:2]
	}
	i, j := 0, 0
	for i < len(base) || j < len(ex) {
		if j == len(ex) || (i < len(base) && base[i].Name < ex[j].Name) {
			dst = append(dst, base[i])
			i++
		} else {
			dst = append(dst, ex[j])
			j++
		}
	}
	return dst
}

// flush encodes and queues the request being built.
func (b *builder) flush() {
	if len(b.req.Timeseries) == 0 {
		return
	}
	size := b.req.Size()
	if cap(b.body) < size {
		b.body = make([]byte, size)
	}
	raw := b.body[:size]
	if _, err := b.req.MarshalToSizedBuffer(raw); err == nil {
		b.put(&request{body: snappy.Encode(nil, raw), samples: b.n})
	}
	clear(b.req.Timeseries)
	b.req.Timeseries = b.req.Timeseries[:0]
	clear(b.labels)
	b.labels = b.labels[:0]
	b.samples = b.samples[:0]
	b.n = 0
}

// request is one encoded WriteRequest.
type request struct {
	body    []byte
	samples int
}

// Units implements export.Request: the queue's capacity counts samples.
func (r *request) Units() int { return r.samples }

// Instances implements export.Request. Remote write sends cumulative
// values, not instances: drops are counted in samples.
func (r *request) Instances() int { return r.samples }

// spoolCodec writes a request to the spool as its snappy body, which holds
// no credential (auth is added at send time).
var spoolCodec = export.Codec[*request]{
	Encode: func(r *request) []byte { return r.body },
	Decode: func(p []byte, units, _ int) (*request, error) {
		if _, err := snappy.DecodedLen(p); err != nil {
			return nil, err
		}
		return &request{body: p, samples: units}, nil
	},
}
