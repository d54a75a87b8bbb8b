// Package rwtest is a fake Prometheus remote-write 1.0 receiver for tests:
// it answers as Prometheus 2.42's /api/v1/write does, is stricter than it
// about the specification, records what it stores, and injects faults.
//
// Status codes copy 2.42 (shared/docs/backends.md §10): 204 on success; 400
// for a body that does not decode and for out-of-order, out-of-bounds and
// duplicate samples; 500 for anything else invalid. The first error rolls
// back the whole request, so nothing of a refused request is stored. An
// exact duplicate (same timestamp, same value bits) is accepted and not
// stored again, as 2.42 does.
//
// Where 2.42 is lenient the fake is strict, so that a client bug shows up in
// a test: labels must be sorted, unique, non-empty, with valid names and a
// __name__ (else 500, and a violation is recorded); samples of a series must
// increase in time within a request too; the protocol's headers must be set
// (a violation is recorded; 2.42 ignores them).
package rwtest

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/fakeserver"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/prompb"
)

// Path is where the receiver listens, as Prometheus.
const Path = "/api/v1/write"

// StaleNaN is Prometheus' stale marker.
const StaleNaN uint64 = 0x7ff0000000000002

// DefaultOutOfBounds is how far behind the newest stored sample a sample may
// be: half of the default 2 h block range.
const DefaultOutOfBounds = time.Hour

var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// Fault is an injected failure (the shared fault injection of
// sinks/fakeserver): a response with Status, or, with Reset, a connection
// closed without a response. A faulted request stores nothing.
type Fault = fakeserver.Fault

// ServiceUnavailable is 2.42's answer while not ready.
func ServiceUnavailable() Fault {
	return Fault{Status: http.StatusServiceUnavailable, Body: []byte("Service Unavailable")}
}

// TooManyRequests is a 429, as a rate-limiting proxy in front of a receiver
// answers.
func TooManyRequests() Fault {
	return Fault{Status: http.StatusTooManyRequests, Body: []byte("too many requests")}
}

// ConnectionReset closes the connection after reading the request.
func ConnectionReset() Fault { return fakeserver.ConnectionReset() }

// Option configures a Server.
type Option func(*Server)

// WithBasicAuth requires these credentials (else 401).
func WithBasicAuth(user, password string) Option {
	return func(s *Server) { s.user, s.password = user, password }
}

// WithBearerToken requires "Authorization: Bearer token" (else 401).
func WithBearerToken(token string) Option { return func(s *Server) { s.bearer = token } }

// WithOutOfBounds sets how far behind the newest stored sample a sample
// may be (default DefaultOutOfBounds).
func WithOutOfBounds(d time.Duration) Option {
	return func(s *Server) { s.outOfBounds = d.Milliseconds() }
}

// WithSeed seeds FailRandomly's draws.
func WithSeed(seed uint64) Option {
	return func(s *Server) { s.seed = seed }
}

// Stats counts what the receiver did.
type Stats struct {
	Requests int         // requests that reached the handler
	ByStatus map[int]int // responses, by status
	// Samples stored; Duplicates accepted without being stored again.
	Samples, Duplicates int
	// RefusedSamples: samples of requests answered 4xx or 5xx (not
	// counting injected faults and resets, which carry nothing).
	RefusedSamples int
	Resets         int // requests answered by closing the connection
	Refused        int // connections reset on accept while down
	Abandoned      int // requests whose client left during injected latency
	OutOfOrder     int // requests refused as out of order (400)
	OutOfBounds    int // requests refused as out of bounds (400)
	// Resent counts requests whose body equals one stored before (a
	// client sending a request again after a lost answer), and
	// ResentSamples their samples, all of them Duplicates: what a client
	// produced is Samples + Duplicates - ResentSamples.
	Resent, ResentSamples int
}

type series struct {
	labels  []prompb.Label
	samples []prompb.Sample
}

// Server is a running receiver. It is safe for concurrent use.
type Server struct {
	ts          *httptest.Server
	user        string
	password    string
	bearer      string
	outOfBounds int64
	seed        uint64
	// Injector is the fault injection: FailNext, FailRandomly, SetLatency,
	// GoDown, Up, IsDown, PendingFaults, ClearFaults.
	*fakeserver.Injector

	mu         sync.Mutex
	series     map[string]*series
	headMax    int64
	hasHead    bool
	violations []string
	stats      Stats
	// stored are the digests of the bodies of requests stored.
	stored map[[sha256.Size]byte]bool
}

// New starts a receiver.
func New(opts ...Option) *Server {
	s := &Server{series: map[string]*series{}, outOfBounds: DefaultOutOfBounds.Milliseconds(), seed: 1,
		stored: map[[sha256.Size]byte]bool{}}
	s.stats.ByStatus = map[int]int{}
	for _, o := range opts {
		o(s)
	}
	s.Injector = fakeserver.New(s.seed)
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.ts.Listener = s.Listener(s.ts.Listener)
	s.ts.Start()
	return s
}

// URL is the write endpoint.
func (s *Server) URL() string { return s.ts.URL + Path }

// Close stops the receiver.
func (s *Server) Close() {
	s.Injector.Close()
	s.ts.CloseClientConnections()
	s.ts.Close()
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
	inj := s.Injector.Stats()
	st.Resets, st.Refused, st.Abandoned = inj.Resets, inj.Refused, inj.Abandoned
	return st
}

// Violations are the specification rules broken by requests received.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// Samples returns the stored samples of every series, by key (as
// Prometheus prints a series: name{a="x",b="y"}).
func (s *Server) Samples() map[string][]prompb.Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]prompb.Sample, len(s.series))
	for k, sr := range s.series {
		out[k] = append([]prompb.Sample(nil), sr.samples...)
	}
	return out
}

// Last is the latest value of each series named name that is not a stale
// marker, by key; a series whose latest sample is a stale marker is
// reported with its value before it.
func (s *Server) Last(name string) map[string]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]float64{}
	for k, sr := range s.series {
		if nameOf(sr.labels) != name {
			continue
		}
		for i := len(sr.samples) - 1; i >= 0; i-- {
			if math.Float64bits(sr.samples[i].Value) != StaleNaN {
				out[k] = sr.samples[i].Value
				break
			}
		}
	}
	return out
}

// Total sums Last over the series of name: for a counter whose instances
// each add one, the instances that reached the receiver.
func (s *Server) Total(name string) float64 {
	var t float64
	for _, v := range s.Last(name) {
		t += v
	}
	return t
}

// Stale reports the series of name whose latest sample is a stale marker.
func (s *Server) Stale(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, sr := range s.series {
		if nameOf(sr.labels) == name && len(sr.samples) > 0 && math.Float64bits(sr.samples[len(sr.samples)-1].Value) == StaleNaN {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func nameOf(ls []prompb.Label) string {
	for _, l := range ls {
		if l.Name == "__name__" {
			return l.Value
		}
	}
	return ""
}

// Key prints a label set as Prometheus does: name{a="x",b="y"}.
func Key(ls []prompb.Label) string {
	var b strings.Builder
	b.WriteString(nameOf(ls))
	b.WriteByte('{')
	first := true
	for _, l := range ls {
		if l.Name == "__name__" {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(l.Value))
	}
	b.WriteByte('}')
	return b.String()
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.stats.Requests++
	s.mu.Unlock()
	fault, out := s.Intercept(w, r)
	switch out {
	case fakeserver.Reset, fakeserver.Abandoned:
		return
	case fakeserver.Faulted:
		s.respond(w, fault.Status, fault.Header, string(fault.Body))
		return
	}
	if r.URL.Path != Path {
		s.respond(w, http.StatusNotFound, nil, "404 page not found")
		return
	}
	if r.Method != http.MethodPost {
		s.respond(w, http.StatusMethodNotAllowed, nil, "method not allowed")
		return
	}
	if !s.authorized(r) {
		s.respond(w, http.StatusUnauthorized, nil, "unauthorized")
		return
	}
	status, msg := s.write(r.Header, body)
	s.respond(w, status, nil, msg)
}

func (s *Server) authorized(r *http.Request) bool {
	switch {
	case s.user != "":
		u, p, ok := r.BasicAuth()
		return ok && u == s.user && p == s.password
	case s.bearer != "":
		return r.Header.Get("Authorization") == "Bearer "+s.bearer
	}
	return true
}

func (s *Server) respond(w http.ResponseWriter, status int, h http.Header, body string) {
	s.mu.Lock()
	s.stats.ByStatus[status]++
	s.mu.Unlock()
	for k, vs := range h {
		w.Header()[k] = vs
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

type pending struct {
	key    string
	labels []prompb.Label
	sample prompb.Sample
}

// write decodes and appends a request, all or nothing.
func (s *Server) write(h http.Header, body []byte) (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, want := range map[string]string{"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"} {
		if got := h.Get(name); got != want {
			s.violations = append(s.violations, fmt.Sprintf("header %s is %q, want %q", name, got, want))
		}
	}
	if v := h.Get("X-Prometheus-Remote-Write-Version"); !strings.HasPrefix(v, "0.1.") {
		s.violations = append(s.violations, fmt.Sprintf("header X-Prometheus-Remote-Write-Version is %q, want 0.1.x", v))
	}
	if h.Get("User-Agent") == "" {
		s.violations = append(s.violations, "no User-Agent")
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		return http.StatusBadRequest, "snappy: " + err.Error()
	}
	var req prompb.WriteRequest
	if err := req.Unmarshal(raw); err != nil {
		return http.StatusBadRequest, "unmarshal: " + err.Error()
	}
	n := 0
	for _, ts := range req.Timeseries {
		n += len(ts.Samples)
	}
	refuse := func(status int, format string, args ...any) (int, string) {
		s.stats.RefusedSamples += n
		return status, fmt.Sprintf(format, args...)
	}
	// Appending: check every sample against the stored state and the
	// request's earlier samples, then commit all of them.
	var adds []pending
	last := map[string]prompb.Sample{}
	headMax, hasHead := s.headMax, s.hasHead
	dups := 0
	for _, ts := range req.Timeseries {
		if msg := s.checkLabels(ts.Labels); msg != "" {
			s.violations = append(s.violations, msg)
			return refuse(http.StatusInternalServerError, "%s", msg)
		}
		key := Key(ts.Labels)
		for _, smp := range ts.Samples {
			if hasHead && smp.Timestamp < headMax-s.outOfBounds {
				s.stats.OutOfBounds++
				return refuse(http.StatusBadRequest, "out of bounds")
			}
			prev, ok := last[key]
			if !ok {
				if sr := s.series[key]; sr != nil && len(sr.samples) > 0 {
					prev, ok = sr.samples[len(sr.samples)-1], true
				}
			}
			if ok {
				switch {
				case smp.Timestamp < prev.Timestamp:
					s.stats.OutOfOrder++
					return refuse(http.StatusBadRequest, "out of order sample")
				case smp.Timestamp == prev.Timestamp && math.Float64bits(smp.Value) != math.Float64bits(prev.Value):
					return refuse(http.StatusBadRequest, "duplicate sample for timestamp")
				case smp.Timestamp == prev.Timestamp:
					dups++
					continue
				}
			}
			last[key] = smp
			adds = append(adds, pending{key: key, labels: ts.Labels, sample: smp})
		}
	}
	for _, a := range adds {
		sr := s.series[a.key]
		if sr == nil {
			sr = &series{labels: append([]prompb.Label(nil), a.labels...)}
			s.series[a.key] = sr
		}
		sr.samples = append(sr.samples, a.sample)
		if !s.hasHead || a.sample.Timestamp > s.headMax {
			s.headMax, s.hasHead = a.sample.Timestamp, true
		}
	}
	s.stats.Samples += len(adds)
	s.stats.Duplicates += dups
	digest := sha256.Sum256(body)
	if s.stored[digest] {
		s.stats.Resent++
		s.stats.ResentSamples += n
	}
	s.stored[digest] = true
	return http.StatusNoContent, ""
}

// checkLabels applies the specification's label rules; "" when they hold.
func (s *Server) checkLabels(ls []prompb.Label) string {
	if len(ls) == 0 {
		return "empty labelset"
	}
	name := ""
	for i, l := range ls {
		switch {
		case l.Name == "" || l.Value == "":
			return fmt.Sprintf("empty label %q=%q in %v", l.Name, l.Value, ls)
		case i > 0 && ls[i-1].Name == l.Name:
			return fmt.Sprintf("label name %q is not unique", l.Name)
		case i > 0 && ls[i-1].Name > l.Name:
			return fmt.Sprintf("labels not sorted: %q before %q", ls[i-1].Name, l.Name)
		case l.Name != "__name__" && !labelName.MatchString(l.Name):
			return fmt.Sprintf("invalid label name %q", l.Name)
		}
		if l.Name == "__name__" {
			name = l.Value
		}
	}
	if name == "" {
		return fmt.Sprintf("no __name__ in %v", ls)
	}
	if !metricName.MatchString(name) {
		return fmt.Sprintf("invalid metric name %q", name)
	}
	return ""
}
