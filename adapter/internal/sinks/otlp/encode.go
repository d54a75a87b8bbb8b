package otlp

import (
	"bytes"
	"compress/gzip"
	"errors"
	"sort"
	"sync"

	collpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
)

// point is one series' data point, copied under the registry lock;
// attributes are shared (they never change).
type point struct {
	info        *metricInfo
	attrs       []*commonpb.KeyValue
	attrsSize   int
	start, time int64
	acc
	// instances is what the point carries, for drop counts: the samples
	// since the previous export (delta), or 1, a data point (cumulative).
	instances int
}

// builder cuts the points of one export into requests of at most
// maxPoints data points and maxBytes of protobuf.
type builder struct {
	maxPoints, maxBytes int
	delta               bool
	resource            *resourcepb.Resource
	scope               *commonpb.InstrumentationScope
	// envelope is the size of a request around its metrics.
	envelope int
	put      func(*request)

	metrics   []*metricspb.Metric
	cur       *metricspb.Metric
	curInfo   *metricInfo
	points    int
	size      int
	instances int
}

func newBuilder(s settings, version string, put func(*request)) *builder {
	b := &builder{maxPoints: s.maxPoints, maxBytes: s.maxBytes, delta: s.delta, put: put,
		scope: &commonpb.InstrumentationScope{Name: "github.com/meshmetrics/meshmetrics", Version: version}}
	keys := make([]string, 0, len(s.resource))
	for k := range s.resource {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b.resource = &resourcepb.Resource{}
	for _, k := range keys {
		b.resource.Attributes = append(b.resource.Attributes, &commonpb.KeyValue{Key: validUTF8(k),
			Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: validUTF8(s.resource[k])}}})
	}
	b.envelope = proto.Size(b.wrap(nil))
	return b
}

// wrap is the request carrying metrics.
func (b *builder) wrap(metrics []*metricspb.Metric) *collpb.ExportMetricsServiceRequest {
	return &collpb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource:     b.resource,
		ScopeMetrics: []*metricspb.ScopeMetrics{{Scope: b.scope, Metrics: metrics}},
	}}}
}

// sizeOverhead bounds what embedding a message of size n adds: its tag and
// length, at every level of nesting up to the request (metric, scope and
// resource metrics). An estimate on the safe side, so that a request stays
// under maxBytes.
func sizeOverhead(n int) int { return 3 * (1 + varintLen(uint64(n)+16)) }

func varintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// attributesSize is the encoded size of attrs inside a data point.
func attributesSize(attrs []*commonpb.KeyValue) int {
	return proto.Size(&metricspb.NumberDataPoint{Attributes: attrs})
}

// pointSize bounds the encoded size of p's data point from above: its
// attributes (sized once per series) and its fixed-size fields, each
// counted with its tag, whether set or not.
func pointSize(p *point) int {
	const fixed64 = 1 + 8
	if p.info.kind != sinks.Distribution {
		return p.attrsSize + 3*fixed64 + 4 // start, time, value; flags
	}
	packed := func(n int) int { return 1 + varintLen(uint64(8*n)) + 8*n }
	return p.attrsSize + 6*fixed64 + packed(len(p.buckets)) + packed(len(p.info.bounds)) + 4 // start, time, count, sum, min, max; flags
}

// sortPoints groups the points of one metric definition together, in name
// order, so that a request holds each metric once.
func sortPoints(ps []point) {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].info.name < ps[j].info.name })
}

// add appends p, first sending the request being built when p would not
// fit in it.
func (b *builder) add(p *point) {
	var dp proto.Message
	var n int
	switch p.info.kind {
	case sinks.Counter, sinks.Gauge:
		v := p.sum
		if p.info.kind == sinks.Gauge {
			v = p.last
		}
		ndp := &metricspb.NumberDataPoint{Attributes: p.attrs, TimeUnixNano: uint64(p.time),
			Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: v}}
		if p.info.kind == sinks.Counter {
			ndp.StartTimeUnixNano = uint64(p.start)
		}
		dp = ndp
	default:
		hdp := &metricspb.HistogramDataPoint{Attributes: p.attrs, StartTimeUnixNano: uint64(p.start),
			TimeUnixNano: uint64(p.time), Count: p.count, BucketCounts: p.buckets, ExplicitBounds: p.info.bounds}
		if !p.negative {
			sum := p.sum
			hdp.Sum = &sum
		}
		if p.count > 0 {
			minV, maxV := p.min, p.max
			hdp.Min, hdp.Max = &minV, &maxV
		}
		dp = hdp
	}
	n = pointSize(p)
	n += sizeOverhead(n)
	header := 0
	if b.cur == nil || b.curInfo != p.info {
		header = proto.Size(b.shell(p.info)) + sizeOverhead(0)
	}
	if b.points > 0 && (b.points+1 > b.maxPoints || b.envelope+b.size+header+n > b.maxBytes) {
		b.flush()
		header = proto.Size(b.shell(p.info)) + sizeOverhead(0)
	}
	if b.cur == nil || b.curInfo != p.info {
		b.cur, b.curInfo = b.shell(p.info), p.info
		b.metrics = append(b.metrics, b.cur)
		b.size += header
	}
	switch d := b.cur.Data.(type) {
	case *metricspb.Metric_Sum:
		d.Sum.DataPoints = append(d.Sum.DataPoints, dp.(*metricspb.NumberDataPoint))
	case *metricspb.Metric_Gauge:
		d.Gauge.DataPoints = append(d.Gauge.DataPoints, dp.(*metricspb.NumberDataPoint))
	case *metricspb.Metric_Histogram:
		d.Histogram.DataPoints = append(d.Histogram.DataPoints, dp.(*metricspb.HistogramDataPoint))
	}
	b.points++
	b.size += n
	b.instances += p.instances
}

// shell is a metric message without data points.
func (b *builder) shell(info *metricInfo) *metricspb.Metric {
	m := &metricspb.Metric{Name: info.name, Description: validUTF8(info.description), Unit: info.unit}
	temporality := metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
	if b.delta {
		temporality = metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
	}
	switch info.kind {
	case sinks.Counter:
		m.Data = &metricspb.Metric_Sum{Sum: &metricspb.Sum{AggregationTemporality: temporality, IsMonotonic: true}}
	case sinks.Gauge:
		m.Data = &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{}}
	default:
		m.Data = &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{AggregationTemporality: temporality}}
	}
	return m
}

// flush encodes and queues the request being built.
func (b *builder) flush() {
	if b.points == 0 {
		return
	}
	body, err := proto.Marshal(b.wrap(b.metrics))
	if err == nil {
		b.put(&request{body: body, points: b.points, instances: b.instances})
	}
	b.metrics, b.cur, b.curInfo = nil, nil, nil
	b.points, b.size, b.instances = 0, 0, 0
}

// request is one encoded ExportMetricsServiceRequest.
type request struct {
	body      []byte
	points    int
	instances int

	gzOnce sync.Once
	gz     []byte
	gzErr  error
}

// Units implements export.Request: the queue's capacity counts data points.
func (r *request) Units() int { return r.points }

// Instances implements export.Request: the instances the points carry
// (delta), or the data points (cumulative, which, like remote write, sends
// totals: a lost request is healed by the next one).
func (r *request) Instances() int { return r.instances }

// gzipped is the body compressed, once for all attempts.
func (r *request) gzipped() ([]byte, error) {
	r.gzOnce.Do(func() {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		if _, err := w.Write(r.body); err != nil {
			r.gzErr = err
			return
		}
		r.gzErr = w.Close()
		r.gz = buf.Bytes()
	})
	return r.gz, r.gzErr
}

// spoolCodec writes a request to the spool as its protobuf body, which
// holds no credential (headers are added at send time).
var spoolCodec = export.Codec[*request]{
	Encode: func(r *request) []byte { return r.body },
	Decode: func(p []byte, units, instances int) (*request, error) {
		if len(p) == 0 {
			return nil, errors.New("otlp: empty spooled request")
		}
		return &request{body: p, points: units, instances: instances}, nil
	},
}
