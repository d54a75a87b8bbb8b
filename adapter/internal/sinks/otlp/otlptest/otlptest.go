// Package otlptest is a fake OTLP metrics receiver for tests: one port
// serves gRPC (MetricsService/Export, HTTP/2 without TLS or with it) and
// HTTP (POST /v1/metrics, protobuf, gzip or not), as the OpenTelemetry
// Collector's OTLP receiver does. It decodes with the generated OTLP types,
// checks what the data model and the sink's promises require (recorded as
// violations), stores every data point, answers as the OTLP specification
// says, and injects faults through the shared sinks/fakeserver: a fault's
// HTTP status becomes the equivalent gRPC code on gRPC, Retry-After becomes
// a RetryInfo, and PartialSuccess rejects data points in a 2xx answer.
package otlptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	collpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // the receiver takes gzip messages
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/fakeserver"
)

// Path is where the HTTP receiver listens.
const Path = "/v1/metrics"

// MaxRequestBytes is the largest request (decompressed) the receiver
// takes, as the Collector's gRPC default (4 MiB).
const MaxRequestBytes = 4 << 20

// Fault is an injected failure (sinks/fakeserver). A faulted request
// stores nothing, but for PartialSuccess, which stores what it does not
// reject.
type Fault = fakeserver.Fault

// ServiceUnavailable: HTTP 503, gRPC UNAVAILABLE; retryable.
func ServiceUnavailable() Fault {
	return Fault{Status: http.StatusServiceUnavailable, Body: []byte("receiver not ready")}
}

// TooManyRequests: HTTP 429, gRPC RESOURCE_EXHAUSTED (retryable on gRPC
// only with a RetryInfo: give it WithRetryAfter).
func TooManyRequests() Fault {
	return Fault{Status: http.StatusTooManyRequests, Body: []byte("memory limiter: data refused")}
}

// BadRequest: HTTP 400, gRPC INVALID_ARGUMENT; permanent.
func BadRequest() Fault { return Fault{Status: http.StatusBadRequest, Body: []byte("bad data")} }

// InternalError: HTTP 500, gRPC INTERNAL; permanent by the OTLP
// specification (unlike a generic HTTP client's policy).
func InternalError() Fault {
	return Fault{Status: http.StatusInternalServerError, Body: []byte("internal error")}
}

// ConnectionReset closes the connection without an answer.
func ConnectionReset() Fault { return fakeserver.ConnectionReset() }

// partialKind marks a partial success; the body holds the number of data
// points to reject.
const partialKind = "partial"

// PartialSuccess takes the request but rejects its last n data points (not
// stored), answering 2xx with partial_success.rejected_data_points = n.
func PartialSuccess(n int) Fault {
	return Fault{Status: http.StatusOK, Kind: partialKind, Body: []byte(strconv.Itoa(n))}
}

// Option configures a Server.
type Option func(*Server)

// WithSeed seeds FailRandomly's draws.
func WithSeed(seed uint64) Option { return func(s *Server) { s.seed = seed } }

// WithTLS serves TLS (h2 and http/1.1) with cfg.
func WithTLS(cfg *tls.Config) Option { return func(s *Server) { s.tls = cfg } }

// WithRequiredHeader refuses requests without header name: value (HTTP
// 401, gRPC UNAUTHENTICATED).
func WithRequiredHeader(name, value string) Option {
	return func(s *Server) { s.required = append(s.required, [2]string{strings.ToLower(name), value}) }
}

// Point is one stored data point.
type Point struct {
	Start, Time time.Time
	// Temporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_*
	// (UNSPECIFIED for gauges).
	Temporality metricspb.AggregationTemporality
	Monotonic   bool
	// Value of a sum or gauge.
	Value float64
	// A histogram's count, sum (HasSum), bucket counts, bounds, min, max.
	Count        uint64
	Sum          float64
	HasSum       bool
	Buckets      []uint64
	Bounds       []float64
	Min, Max     float64
	HasMinMax    bool
	Unit         string
	Description  string
	Kind         string // "sum", "gauge", "histogram"
	Instance     string // service.instance.id
	Attributes   map[string]string
	ResourceAttr map[string]string
}

// Stats counts what the receiver did.
type Stats struct {
	Requests   int         // requests that reached the handler
	GRPC, HTTP int         // of them, by protocol
	Gzip       int         // compressed ones
	ByStatus   map[int]int // answers, by HTTP status (gRPC answers by their HTTP equivalent)
	Points     int         // data points stored
	Rejected   int         // data points rejected by PartialSuccess
	Resets     int         // requests answered by closing the connection
	Refused    int         // connections reset on accept while down
	Abandoned  int         // requests whose client left during injected latency
	// Duplicates are points identical to their stream's latest one: a
	// request re-sent because its answer was lost (delivery is at least
	// once), kept once as a time-series store keeps an identical sample.
	Duplicates   int
	RequestSizes []int // uncompressed size of each request taken
	RequestPts   []int // data points of each request taken
}

// Server is a running receiver. It is safe for concurrent use.
type Server struct {
	*fakeserver.Injector
	seed     uint64
	tls      *tls.Config
	required [][2]string
	srv      *http.Server
	ln       net.Listener
	gs       *grpc.Server

	mu     sync.Mutex
	series map[string][]Point // by SeriesKey
	// last is each stream's latest point, by its whole identity (the
	// resource too): what the sequence rules are checked against.
	last       map[string]Point
	violations []string
	stats      Stats
	headers    []map[string]string
}

// New starts a receiver on 127.0.0.1.
func New(opts ...Option) *Server {
	s := &Server{seed: 1, series: map[string][]Point{}, last: map[string]Point{}}
	s.stats.ByStatus = map[int]int{}
	for _, o := range opts {
		o(s)
	}
	s.Injector = fakeserver.New(s.seed)
	s.gs = grpc.NewServer(grpc.MaxRecvMsgSize(MaxRequestBytes))
	collpb.RegisterMetricsServiceServer(s.gs, &service{s: s})
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("otlptest: %v", err))
	}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ConnContext: fakeserver.ConnContext, ReadHeaderTimeout: 10 * time.Second}
	s.srv.Protocols = new(http.Protocols)
	s.srv.Protocols.SetHTTP1(true)
	s.srv.Protocols.SetHTTP2(true)
	s.srv.Protocols.SetUnencryptedHTTP2(true)
	s.ln = s.Listener(ln)
	if s.tls != nil {
		cfg := s.tls.Clone()
		cfg.NextProtos = []string{"h2", "http/1.1"}
		s.ln = tls.NewListener(s.ln, cfg)
	}
	go func() { _ = s.srv.Serve(s.ln) }()
	return s
}

// Addr is host:port, a gRPC endpoint.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the HTTP endpoint.
func (s *Server) URL() string {
	scheme := "http"
	if s.tls != nil {
		scheme = "https"
	}
	return scheme + "://" + s.Addr() + Path
}

// Close stops the receiver.
func (s *Server) Close() {
	s.Injector.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	_ = s.srv.Close()
}

type callKey struct{}

// call is what the HTTP layer tells the gRPC service about a request.
type call struct {
	fault *Fault
	gzip  bool
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		// gRPC reads its message itself; a client that gives up resets
		// its stream, which ends r's context.
		f, out := s.Intercept(w, r)
		if out == fakeserver.Reset || out == fakeserver.Abandoned {
			return
		}
		c := &call{fault: f, gzip: r.Header.Get("Grpc-Encoding") == "gzip"}
		s.gs.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
		return
	}
	// The body is read first, as the other fakes do: only then does the
	// HTTP/1 server notice a client that gives up during injected latency.
	raw, readErr := io.ReadAll(io.LimitReader(r.Body, MaxRequestBytes+1))
	f, out := s.Intercept(w, r)
	if out == fakeserver.Reset || out == fakeserver.Abandoned {
		return
	}
	s.serveHTTP(w, r, f, raw, readErr)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request, f *Fault, body []byte, readErr error) {
	s.count(false, r.Header.Get("Content-Encoding") == "gzip", headersOf(r.Header))
	answer := func(code int, msg string) {
		s.mu.Lock()
		s.stats.ByStatus[code]++
		s.mu.Unlock()
		b, _ := proto.Marshal(&spb.Status{Code: int32(grpcCode(code)), Message: msg})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(code)
		_, _ = w.Write(b)
	}
	if r.Method != http.MethodPost || r.URL.Path != Path {
		answer(http.StatusNotFound, "not found")
		return
	}
	if f != nil && f.Kind != partialKind {
		for k, vs := range f.Header {
			w.Header()[k] = vs
		}
		answer(f.Status, string(f.Body))
		return
	}
	if code, msg := s.authorized(headersOf(r.Header)); code != 0 {
		answer(code, msg)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		answer(http.StatusUnsupportedMediaType, "content type "+ct)
		return
	}
	if readErr != nil {
		answer(http.StatusBadRequest, readErr.Error())
		return
	}
	raw := body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			answer(http.StatusBadRequest, "gzip: "+err.Error())
			return
		}
		if raw, err = io.ReadAll(io.LimitReader(zr, MaxRequestBytes+1)); err != nil {
			answer(http.StatusBadRequest, "gzip: "+err.Error())
			return
		}
	}
	if len(raw) > MaxRequestBytes {
		answer(http.StatusRequestEntityTooLarge, "request too large")
		return
	}
	var req collpb.ExportMetricsServiceRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		answer(http.StatusBadRequest, "decode: "+err.Error())
		return
	}
	resp := s.store(&req, len(raw), f)
	b, _ := proto.Marshal(resp)
	s.mu.Lock()
	s.stats.ByStatus[http.StatusOK]++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(b)
}

type service struct {
	collpb.UnimplementedMetricsServiceServer
	s *Server
}

func (svc *service) Export(ctx context.Context, req *collpb.ExportMetricsServiceRequest) (*collpb.ExportMetricsServiceResponse, error) {
	s := svc.s
	md, _ := metadata.FromIncomingContext(ctx)
	hs := map[string]string{}
	for k, v := range md {
		if len(v) > 0 {
			hs[k] = v[0]
		}
	}
	c, _ := ctx.Value(callKey{}).(*call)
	if c == nil {
		c = &call{}
	}
	s.count(true, c.gzip, hs)
	fail := func(code int, msg string, header http.Header) error {
		s.mu.Lock()
		s.stats.ByStatus[code]++
		s.mu.Unlock()
		st := status.New(grpcCode(code), msg)
		if ra := header.Get("Retry-After"); ra != "" {
			if secs, err := strconv.Atoi(ra); err == nil {
				st, _ = st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Duration(secs) * time.Second)})
			}
		}
		return st.Err()
	}
	f := c.fault
	if f != nil && f.Kind != partialKind {
		return nil, fail(f.Status, string(f.Body), f.Header)
	}
	if code, msg := s.authorized(hs); code != 0 {
		return nil, fail(code, msg, nil)
	}
	resp := s.store(req, proto.Size(req), f)
	s.mu.Lock()
	s.stats.ByStatus[http.StatusOK]++
	s.mu.Unlock()
	return resp, nil
}

// grpcCode is the gRPC code the OTLP specification pairs with an HTTP
// status.
func grpcCode(httpStatus int) codes.Code {
	switch httpStatus {
	case http.StatusOK:
		return codes.OK
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.Unimplemented
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return codes.Unavailable
	case http.StatusGatewayTimeout:
		return codes.DeadlineExceeded
	case http.StatusRequestEntityTooLarge:
		return codes.ResourceExhausted
	case http.StatusInternalServerError:
		return codes.Internal
	}
	return codes.Unknown
}

func headersOf(h http.Header) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		if len(v) > 0 {
			out[strings.ToLower(k)] = v[0]
		}
	}
	return out
}

func (s *Server) count(grpcReq, gz bool, hs map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Requests++
	if grpcReq {
		s.stats.GRPC++
	} else {
		s.stats.HTTP++
	}
	if gz {
		s.stats.Gzip++
	}
	s.headers = append(s.headers, hs)
}

func (s *Server) authorized(hs map[string]string) (int, string) {
	for _, r := range s.required {
		if hs[r[0]] != r[1] {
			return http.StatusUnauthorized, "missing or wrong " + r[0]
		}
	}
	return 0, ""
}

// store checks and records req; a PartialSuccess fault rejects its last
// points.
func (s *Server) store(req *collpb.ExportMetricsServiceRequest, size int, f *Fault) *collpb.ExportMetricsServiceResponse {
	points := decode(req, s.violate)
	reject := 0
	if f != nil && f.Kind == partialKind {
		reject, _ = strconv.Atoi(string(f.Body))
		reject = min(reject, len(points))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.RequestSizes = append(s.stats.RequestSizes, size)
	s.stats.RequestPts = append(s.stats.RequestPts, len(points))
	kept := points[:len(points)-reject]
	dups := 0
	for _, p := range kept {
		key := SeriesKey(p.name, p.Instance, p.Attributes)
		// A stream is the metric, its attributes and its whole resource:
		// two sinks that differ in a resource attribute write two streams,
		// whose points may overlap in time.
		stream := key + "{" + SeriesKey("", "", p.ResourceAttr) + "}"
		if prev, ok := s.last[stream]; ok {
			if reflect.DeepEqual(prev, p.Point) {
				dups++
				continue
			}
			s.checkSequenceLocked(key, prev, p.Point)
		}
		s.last[stream] = p.Point
		s.series[key] = append(s.series[key], p.Point)
	}
	s.stats.Points += len(kept) - dups
	s.stats.Duplicates += dups
	s.stats.Rejected += reject
	resp := &collpb.ExportMetricsServiceResponse{}
	if reject > 0 {
		resp.PartialSuccess = &collpb.ExportMetricsPartialSuccess{RejectedDataPoints: int64(reject),
			ErrorMessage: fmt.Sprintf("%d data points rejected by the test", reject)}
	}
	return resp
}

// checkSequenceLocked: points of a series must not go back in time; delta
// points must not overlap (an overlap counts the same samples twice);
// cumulative sums of one start must not decrease.
func (s *Server) checkSequenceLocked(key string, prev, p Point) {
	switch {
	case !p.Time.After(prev.Time) && p.Start.Equal(prev.Start):
		s.violations = append(s.violations, fmt.Sprintf("%s: point at %v not after %v", key, p.Time, prev.Time))
	case p.Temporality == metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA && p.Start.Before(prev.Time):
		s.violations = append(s.violations, fmt.Sprintf("%s: delta point starting %v overlaps the previous one ending %v", key, p.Start, prev.Time))
	case p.Temporality == metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE && p.Start.Equal(prev.Start) &&
		p.Monotonic && p.Value < prev.Value:
		s.violations = append(s.violations, fmt.Sprintf("%s: cumulative sum went down from %v to %v", key, prev.Value, p.Value))
	}
}

func (s *Server) violate(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violations = append(s.violations, msg)
}

type namedPoint struct {
	name string
	Point
}

// decode flattens a request into points, reporting what breaks the data
// model or the sink's promises.
func decode(req *collpb.ExportMetricsServiceRequest, violate func(string)) []namedPoint {
	var out []namedPoint
	for _, rm := range req.GetResourceMetrics() {
		res := attrs(rm.GetResource().GetAttributes(), violate)
		if res["service.instance.id"] == "" || res["service.name"] == "" {
			violate(fmt.Sprintf("resource without service.name or service.instance.id: %v", res))
		}
		for _, sm := range rm.GetScopeMetrics() {
			names := map[string]bool{}
			for _, m := range sm.GetMetrics() {
				if m.GetName() == "" {
					violate("metric without a name")
				}
				names[m.GetName()] = true
				base := Point{Unit: m.GetUnit(), Description: m.GetDescription(), Instance: res["service.instance.id"], ResourceAttr: res}
				add := func(p Point, a []*commonpb.KeyValue, start, t uint64) {
					p.Attributes = attrs(a, violate)
					p.Start, p.Time = time.Unix(0, int64(start)), time.Unix(0, int64(t))
					if t == 0 {
						violate(m.GetName() + ": a point without time")
					}
					if p.Kind != "gauge" && (start == 0 || start >= t) {
						violate(fmt.Sprintf("%s: start %d not before time %d", m.GetName(), start, t))
					}
					out = append(out, namedPoint{name: m.GetName(), Point: p})
				}
				switch d := m.GetData().(type) {
				case *metricspb.Metric_Sum:
					if d.Sum.GetAggregationTemporality() == metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_UNSPECIFIED {
						violate(m.GetName() + ": sum without temporality")
					}
					for _, dp := range d.Sum.GetDataPoints() {
						p := base
						p.Kind, p.Temporality, p.Monotonic, p.Value = "sum", d.Sum.GetAggregationTemporality(), d.Sum.GetIsMonotonic(), dp.GetAsDouble()
						add(p, dp.GetAttributes(), dp.GetStartTimeUnixNano(), dp.GetTimeUnixNano())
					}
				case *metricspb.Metric_Gauge:
					for _, dp := range d.Gauge.GetDataPoints() {
						p := base
						p.Kind, p.Value = "gauge", dp.GetAsDouble()
						add(p, dp.GetAttributes(), dp.GetStartTimeUnixNano(), dp.GetTimeUnixNano())
					}
				case *metricspb.Metric_Histogram:
					if d.Histogram.GetAggregationTemporality() == metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_UNSPECIFIED {
						violate(m.GetName() + ": histogram without temporality")
					}
					for _, dp := range d.Histogram.GetDataPoints() {
						p := base
						p.Kind, p.Temporality = "histogram", d.Histogram.GetAggregationTemporality()
						p.Count, p.Buckets, p.Bounds = dp.GetCount(), dp.GetBucketCounts(), dp.GetExplicitBounds()
						p.Sum, p.HasSum = dp.GetSum(), dp.Sum != nil
						p.Min, p.Max, p.HasMinMax = dp.GetMin(), dp.GetMax(), dp.Min != nil && dp.Max != nil
						var total uint64
						for _, c := range p.Buckets {
							total += c
						}
						if len(p.Buckets) != len(p.Bounds)+1 || total != p.Count {
							violate(fmt.Sprintf("%s: %d buckets for %d bounds, %d counted of %d", m.GetName(), len(p.Buckets), len(p.Bounds), total, p.Count))
						}
						if !sort.Float64sAreSorted(p.Bounds) {
							violate(m.GetName() + ": bounds not sorted")
						}
						add(p, dp.GetAttributes(), dp.GetStartTimeUnixNano(), dp.GetTimeUnixNano())
					}
				default:
					violate(fmt.Sprintf("%s: unexpected data %T", m.GetName(), d))
				}
			}
		}
	}
	return out
}

func attrs(kvs []*commonpb.KeyValue, violate func(string)) map[string]string {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		if _, dup := out[kv.GetKey()]; dup {
			violate("duplicate attribute " + kv.GetKey())
		}
		out[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	return out
}

// SeriesKey is how the receiver names a series: metric{instance}{a=x,b=y}.
func SeriesKey(name, instance string, attributes map[string]string) string {
	keys := make([]string, 0, len(attributes))
	for k := range attributes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s{%s}{", name, instance)
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%s", k, attributes[k])
	}
	b.WriteByte('}')
	return b.String()
}

// Series returns the stored points of every series of metric name, by
// SeriesKey.
func (s *Server) Series(name string) map[string][]Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]Point{}
	for k, ps := range s.series {
		if strings.HasPrefix(k, name+"{") {
			out[k] = append([]Point(nil), ps...)
		}
	}
	return out
}

// Total is what the points of sum metric name add up to, over every series
// and replica: for each run of points with one start time, the last value
// (cumulative: the run's total; delta: each point is its own run). It is
// the count of instances of a counter whose instances each add one,
// whatever the temporality, across restarts.
func (s *Server) Total(name string) float64 {
	var total float64
	for _, ps := range s.Series(name) {
		for _, v := range runs(ps) {
			total += v.Value
		}
	}
	return total
}

// HistogramTotal adds up the histogram points of name the same way:
// count, sum and bucket counts.
func (s *Server) HistogramTotal(name string) (count uint64, sum float64, buckets []uint64) {
	for _, ps := range s.Series(name) {
		for _, p := range runs(ps) {
			count += p.Count
			sum += p.Sum
			if buckets == nil {
				buckets = make([]uint64, len(p.Buckets))
			}
			for i := range min(len(buckets), len(p.Buckets)) {
				buckets[i] += p.Buckets[i]
			}
		}
	}
	return count, sum, buckets
}

// runs is the last point of each start time.
func runs(ps []Point) []Point {
	last := map[int64]Point{}
	for _, p := range ps {
		if q, ok := last[p.Start.UnixNano()]; !ok || !p.Time.Before(q.Time) {
			last[p.Start.UnixNano()] = p
		}
	}
	out := make([]Point, 0, len(last))
	for _, p := range last {
		out = append(out, p)
	}
	return out
}

// Violations are the rules broken by requests received.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// Headers are the headers (gRPC metadata) of each request, lower-cased.
func (s *Server) Headers() []map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]string(nil), s.headers...)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.ByStatus = map[int]int{}
	for k, v := range s.stats.ByStatus {
		st.ByStatus[k] = v
	}
	st.RequestSizes = append([]int(nil), s.stats.RequestSizes...)
	st.RequestPts = append([]int(nil), s.stats.RequestPts...)
	inj := s.Injector.Stats()
	st.Resets, st.Refused, st.Abandoned = inj.Resets, inj.Refused, inj.Abandoned
	return st
}
