// Package libratotest is a fake Librato/AppOptics API server for testing the
// librato sink against the documented API (shared/docs/backends.md Part A).
//
// It is strict where the docs are definite, so that a client bug shows up as
// a 400 in a test rather than as lost data in production, and lenient where
// they are unconfirmed (gzip, both AppOptics auth forms, the time window).
// Rules, with the section of backends.md they come from:
//
//   - Basic auth in the Librato form and both AppOptics forms, else 401 (§1).
//   - POST /v1/measurements: Content-Type application/json, else 415 (§1);
//     name, tag name and tag value regexes, at most 50 tags, at least one
//     tag per measurement, own tags replacing the top-level ones (§3, §4);
//     count requires sum and excludes value (§3); magnitudes above 1e126
//     rejected, below 1e-130 stored as 0 (§4); at most 1000 measurements
//     (§4). 202 with "failed":0 on success, 400 with errors.params
//     otherwise, all or nothing (§6).
//   - POST /v1/metrics: form or JSON, gauges and counters as lists or
//     objects keyed by name; the same summary rules for gauges, a plain value
//     for counters, source names 1-255 of [A-Za-z0-9.:_-] and not "all";
//     at most 300 measurements; 200 on success (§2, §4).
//   - Unparseable bodies get 400 (or 429, WithMalformedStatus), oversized
//     ones 413, unknown Content-Encodings 415.
//
// It records every accepted measurement and injects faults on demand. A
// request it fails on purpose (5xx, 429, 403, a reset connection) records
// nothing, so what a retrying client sends reconciles with what was recorded.
//
// Like the service, it keeps one value per series and time: a measurement
// (tagged: name and tag set; legacy: kind, name and source) whose time is
// already stored replaces the stored one, as a request sent again after a
// lost answer does. Stats counts the replacements, and, apart, those whose
// values differed (Conflicts: the earlier value is lost, which a client
// must never cause).
package libratotest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/fakeserver"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
)

// Defaults for the options.
const (
	DefaultEmail          = "test@example.com"
	DefaultToken          = "test-token"
	DefaultMaxBodyBytes   = 4 << 20
	DefaultRecentRequests = 32
)

type config struct {
	email, token      string
	maxMeasurements   int
	maxLegacy         int
	maxTags           int
	maxBodyBytes      int64
	recent            int
	seed              uint64
	malformedStatus   int
	maxAge, maxFuture time.Duration
	now               func() time.Time
}

// Option configures a Server.
type Option func(*config)

// WithCredentials sets the account email and API token the server accepts.
func WithCredentials(email, token string) Option {
	return func(c *config) { c.email, c.token = email, token }
}

// WithMaxMeasurements sets how many measurements a tagged request may carry
// before it is rejected with 400 (default librato.MaxMeasurementsPerRequest).
func WithMaxMeasurements(n int) Option { return func(c *config) { c.maxMeasurements = n } }

// WithMaxLegacyMeasurements sets how many gauges plus counters a legacy
// request may carry before it is rejected with 400 (default
// librato.MaxLegacyMeasurementsPerRequest).
func WithMaxLegacyMeasurements(n int) Option { return func(c *config) { c.maxLegacy = n } }

// WithMaxTags sets how many tags a measurement may have (default
// librato.MaxTagsPerMeasurement).
func WithMaxTags(n int) Option { return func(c *config) { c.maxTags = n } }

// WithMaxBodyBytes sets the largest body accepted, both as sent and after
// gzip decoding; larger ones get 413. The service's own limit is unconfirmed.
func WithMaxBodyBytes(n int64) Option { return func(c *config) { c.maxBodyBytes = n } }

// WithRecentRequests sets how many requests Requests keeps.
func WithRecentRequests(n int) Option { return func(c *config) { c.recent = n } }

// WithSeed seeds the random source of FailRandomly, so that a test sees the
// same failures for the same sequence of requests.
func WithSeed(seed uint64) Option { return func(c *config) { c.seed = seed } }

// WithMalformedStatus sets the status for a body that cannot be parsed at
// all. The default is 400; the docs say the service may answer 429 instead
// (§6), which a client must not retry forever.
func WithMalformedStatus(code int) Option { return func(c *config) { c.malformedStatus = code } }

// WithTimeWindow rejects measurement times more than past before or future
// after the server's clock, with the service's "is too far in the past"
// message. The real window is unconfirmed (§4), so it is off by default; a
// zero bound is not checked.
func WithTimeWindow(past, future time.Duration) Option {
	return func(c *config) { c.maxAge, c.maxFuture = past, future }
}

// WithClock sets the clock used for the time window, default times of legacy
// measurements and the request_time of rate-limit bodies. Fault windows and
// latency use real time.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// Server is a running fake API. It is safe for concurrent use.
type Server struct {
	cfg config
	ts  *httptest.Server
	// Injector is the fault injection: FailNext, FailRandomly, SetLatency,
	// GoDown, Up, IsDown, PendingFaults, ClearFaults.
	*fakeserver.Injector

	mu     sync.Mutex
	seq    uint64
	points []Point
	legacy []LegacyPoint
	// pointAt and legacyAt index the stored values by series and time.
	pointAt   map[string]int
	legacyAt  map[string]int
	stats     Stats
	recent    []Request
	rateLimit *librato.RateLimit
}

// New starts a server.
func New(opts ...Option) *Server {
	cfg := config{
		email:           DefaultEmail,
		token:           DefaultToken,
		maxMeasurements: librato.MaxMeasurementsPerRequest,
		maxLegacy:       librato.MaxLegacyMeasurementsPerRequest,
		maxTags:         librato.MaxTagsPerMeasurement,
		maxBodyBytes:    DefaultMaxBodyBytes,
		recent:          DefaultRecentRequests,
		seed:            1,
		malformedStatus: http.StatusBadRequest,
		now:             time.Now,
	}
	for _, opt := range opts {
		opt(&cfg)
	}
	s := &Server{
		cfg:      cfg,
		Injector: fakeserver.New(cfg.seed),
		stats:    Stats{ByStatus: map[int]int{}},
		pointAt:  map[string]int{},
		legacyAt: map[string]int{},
	}
	s.BeforeReset = s.recordReset
	s.ts = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.ts.Listener = s.Listener(s.ts.Listener)
	s.ts.Start()
	return s
}

// URL is the base URL; the API paths are librato.MeasurementsPath and
// librato.LegacyMetricsPath under it.
func (s *Server) URL() string { return s.ts.URL }

// Client returns an HTTP client for the server.
func (s *Server) Client() *http.Client { return s.ts.Client() }

// Close stops the server, ending any injected latency early.
func (s *Server) Close() {
	s.Injector.Close()
	s.ts.Close()
}

// AuthForm is how a request authenticated (§1).
type AuthForm int

// The forms. Only the last three are accepted.
const (
	AuthMissing        AuthForm = iota // no Basic credentials
	AuthRejected                       // Basic credentials that match no accepted form
	AuthLibrato                        // user = account email, password = token
	AuthAppOptics                      // user = token, empty password (AppOptics docs)
	AuthAppOpticsToken                 // user "token", password = token (appoptics-api-go, Istio)
)

func (a AuthForm) String() string {
	switch a {
	case AuthMissing:
		return "missing"
	case AuthRejected:
		return "rejected"
	case AuthLibrato:
		return "librato"
	case AuthAppOptics:
		return "appoptics"
	case AuthAppOpticsToken:
		return "appoptics-token-user"
	}
	return fmt.Sprintf("AuthForm(%d)", int(a))
}

// SetCredentials changes the account email and API token the server
// accepts from now on, as a token rotation on the service does.
func (s *Server) SetCredentials(email, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.email, s.cfg.token = email, token
}

func (s *Server) authenticate(r *http.Request) AuthForm {
	s.mu.Lock()
	email, token := s.cfg.email, s.cfg.token
	s.mu.Unlock()
	user, pass, ok := r.BasicAuth()
	switch {
	case !ok:
		return AuthMissing
	case user == email && pass == token:
		return AuthLibrato
	case user == token && pass == "":
		return AuthAppOptics
	case user == "token" && pass == token:
		return AuthAppOpticsToken
	}
	return AuthRejected
}

// Outcome is what the server did with a request.
type Outcome string

// The outcomes.
const (
	OutcomeAccepted  Outcome = "accepted"  // valid; its measurements are recorded
	OutcomeRejected  Outcome = "rejected"  // answered 4xx by the API rules
	OutcomeFault     Outcome = "fault"     // answered with an injected status
	OutcomeReset     Outcome = "reset"     // connection closed without a response
	OutcomeAbandoned Outcome = "abandoned" // the client went away during injected latency
)

// Request is a request as received, kept for inspection.
type Request struct {
	Seq      uint64 // 1 for the first request the handler saw
	Received time.Time
	Method   string
	Path     string
	Query    string // the raw query string
	Header   http.Header
	RawBody  []byte // as sent, at most the body limit
	Body     []byte // after Content-Encoding decoding; nil when not decoded
	Auth     AuthForm
	Status   int // 0 when no response was sent
	Outcome  Outcome
}

type response struct {
	status int
	header http.Header
	body   []byte
}

var (
	errTooLarge            = errors.New("body too large")
	errUnsupportedEncoding = errors.New("unsupported content encoding")
)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rec := Request{
		Received: time.Now(),
		Method:   r.Method,
		Path:     r.URL.Path,
		Query:    r.URL.RawQuery,
		Header:   r.Header.Clone(),
		Auth:     s.authenticate(r),
	}
	raw, readErr := readAtMost(r.Body, s.cfg.maxBodyBytes)
	rec.RawBody = raw

	s.mu.Lock()
	s.seq++
	rec.Seq = s.seq
	s.stats.Requests++
	s.mu.Unlock()

	// A reset request is recorded before the connection closes
	// (BeforeReset), so that its client finds it recorded.
	r = r.WithContext(context.WithValue(r.Context(), recordKey{}, &rec))
	fault, out := s.Intercept(w, r)
	switch out {
	case fakeserver.Reset:
		return
	case fakeserver.Abandoned:
		rec.Outcome = OutcomeAbandoned
		s.mu.Lock()
		s.keepLocked(rec)
		s.mu.Unlock()
		return
	case fakeserver.Faulted:
		rec.Outcome = OutcomeFault
		s.respond(w, rec, s.faultResponse(*fault), nil, nil)
		return
	}

	resp, points, legacy := s.handle(r, &rec, raw, readErr)
	rec.Outcome = OutcomeRejected
	if resp.status < 300 {
		rec.Outcome = OutcomeAccepted
	}
	s.respond(w, rec, resp, points, legacy)
}

// recordKey carries a request's record to recordReset.
type recordKey struct{}

// recordReset records a request about to be reset.
func (s *Server) recordReset(r *http.Request) {
	rec, ok := r.Context().Value(recordKey{}).(*Request)
	if !ok {
		return
	}
	rec.Outcome = OutcomeReset
	s.mu.Lock()
	s.keepLocked(*rec)
	s.mu.Unlock()
}

// respond records the outcome before writing, so that a client that has its
// response can already see its measurements in the records.
func (s *Server) respond(w http.ResponseWriter, rec Request, resp response, points []Point, legacy []LegacyPoint) {
	rec.Status = resp.status
	s.mu.Lock()
	for i := range points {
		points[i].Request = rec.Seq
	}
	for i := range legacy {
		legacy[i].Request = rec.Seq
	}
	for _, p := range points {
		s.storePointLocked(p)
	}
	for _, p := range legacy {
		s.storeLegacyLocked(p)
	}
	s.stats.Accepted += len(points)
	s.stats.LegacyAccepted += len(legacy)
	s.stats.ByStatus[resp.status]++
	s.keepLocked(rec)
	rl := s.rateLimit
	s.mu.Unlock()

	h := w.Header()
	if rl != nil {
		h.Set(librato.HeaderRateLimitStd, rl.String())
	}
	for k, vs := range resp.header {
		h[k] = vs
	}
	if len(resp.body) > 0 && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body)
}

func (s *Server) keepLocked(rec Request) {
	if s.cfg.recent <= 0 {
		return
	}
	if len(s.recent) == s.cfg.recent {
		copy(s.recent, s.recent[1:])
		s.recent = s.recent[:len(s.recent)-1]
	}
	s.recent = append(s.recent, rec)
}

// handle applies the API rules in the order a real front end would: route,
// method, auth, size, encoding, content type, then the payload.
func (s *Server) handle(r *http.Request, rec *Request, raw []byte, readErr error) (response, []Point, []LegacyPoint) {
	tagged := r.URL.Path == librato.MeasurementsPath
	if !tagged && r.URL.Path != librato.LegacyMetricsPath {
		return errorResponse(http.StatusNotFound, "request", "Not Found"), nil, nil
	}
	if r.Method != http.MethodPost {
		resp := errorResponse(http.StatusMethodNotAllowed, "request", "Method Not Allowed")
		resp.header = http.Header{"Allow": {http.MethodPost}}
		return resp, nil, nil
	}
	if rec.Auth < AuthLibrato {
		resp := errorResponse(http.StatusUnauthorized, "request", "Authorization Required")
		resp.header = http.Header{"Www-Authenticate": {`Basic realm="meshmetrics fake"`}}
		return resp, nil, nil
	}
	if readErr != nil {
		return s.bodyError(readErr), nil, nil
	}
	body, err := decodeContent(r.Header.Get("Content-Encoding"), raw, s.cfg.maxBodyBytes)
	if err != nil {
		return s.bodyError(err), nil, nil
	}
	rec.Body = body
	mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if tagged {
		if mediaType != "application/json" {
			return errorResponse(http.StatusUnsupportedMediaType, "request", "Content type was not application/json"), nil, nil
		}
		points, errs, err := s.parseMeasurements(body)
		if err != nil {
			return s.bodyError(err), nil, nil
		}
		if len(errs) > 0 {
			return paramsResponse(errs), nil, nil
		}
		n := len(points)
		return jsonResponse(http.StatusAccepted, librato.MeasurementsResponse{Measurements: librato.MeasurementsResult{
			Summary: librato.MeasurementsSummary{Total: n, Accepted: n},
		}}), points, nil
	}
	var lreq *wireLegacy
	switch mediaType {
	case "application/json":
		lreq, err = parseLegacyJSON(body)
	case "application/x-www-form-urlencoded", "":
		lreq, err = parseLegacyForm(body)
	default:
		return errorResponse(http.StatusUnsupportedMediaType, "request",
			"Content type was not application/json or application/x-www-form-urlencoded"), nil, nil
	}
	if err != nil {
		return s.bodyError(err), nil, nil
	}
	legacy, errs := s.validateLegacy(lreq)
	if len(errs) > 0 {
		return paramsResponse(errs), nil, nil
	}
	return response{status: http.StatusOK}, nil, legacy
}

func (s *Server) bodyError(err error) response {
	switch {
	case errors.Is(err, errTooLarge):
		return errorResponse(http.StatusRequestEntityTooLarge, "request",
			fmt.Sprintf("request body exceeds %d bytes", s.cfg.maxBodyBytes))
	case errors.Is(err, errUnsupportedEncoding):
		return errorResponse(http.StatusUnsupportedMediaType, "request", err.Error())
	}
	return errorResponse(s.cfg.malformedStatus, "request", "could not parse the request body: "+err.Error())
}

func readAtMost(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return b, err
	}
	if int64(len(b)) > limit {
		return b[:limit], errTooLarge
	}
	return b, nil
}

func decodeContent(encoding string, raw []byte, limit int64) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return raw, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		b, err := readAtMost(zr, limit)
		if err != nil {
			if errors.Is(err, errTooLarge) {
				return nil, err
			}
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w %q", errUnsupportedEncoding, encoding)
}

func jsonResponse(status int, v any) response {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only the package's own types are encoded
	}
	return response{status: status, body: b}
}

// errorResponse is the documented error body with one message under group
// ("request" or "system").
func errorResponse(status int, group, msg string) response {
	var d librato.ErrorDetails
	if group == "system" {
		d.System = librato.Messages{msg}
	} else {
		d.Request = librato.Messages{msg}
	}
	return jsonResponse(status, librato.ErrorResponse{Errors: d})
}

func paramsResponse(errs paramErrors) response {
	return jsonResponse(http.StatusBadRequest, librato.ErrorResponse{Errors: librato.ErrorDetails{Params: errs}})
}
