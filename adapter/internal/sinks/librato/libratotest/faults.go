package libratotest

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
)

// RateLimitError is the error text of the fake's rate-limit bodies (§5).
const RateLimitError = "You have hit the API limit for measurements [measure:raw_rate]. Contact: support to raise it."

// Fault is an injected failure: a response with Status, or, with Reset, a
// connection closed without any response. A faulted request is never
// recorded as accepted.
type Fault struct {
	Status int         // response status; ignored with Reset
	Header http.Header // extra response headers
	Body   []byte      // response body; nil for the default body of Status
	Reset  bool        // close the connection (TCP RST) instead of responding

	// rateLimitBody asks for the flat rate-limit body, stamped with the
	// request_time of the response rather than of the fault's creation.
	rateLimitBody bool
}

// ServiceUnavailable is the maintenance answer, 503 (§6).
func ServiceUnavailable() Fault { return Fault{Status: http.StatusServiceUnavailable} }

// InternalServerError is a 500.
func InternalServerError() Fault { return Fault{Status: http.StatusInternalServerError} }

// TooManyRequests is a 429 with the rate-limit body. Add WithRetryAfter or
// WithRateLimit for the headers a client may honour.
func TooManyRequests() Fault {
	return Fault{Status: http.StatusTooManyRequests, rateLimitBody: true}
}

// RateLimitForbidden is the 403 a rate-limited account gets, with the flat
// body {"request_time":...,"error":"You have hit the API limit..."} (§5, §6).
func RateLimitForbidden() Fault {
	return Fault{Status: http.StatusForbidden, rateLimitBody: true}
}

// ConnectionReset closes the connection after the request has been read,
// without a response.
func ConnectionReset() Fault { return Fault{Reset: true} }

// WithHeader returns f with header key set to value.
func (f Fault) WithHeader(key, value string) Fault {
	f.Header = f.Header.Clone()
	if f.Header == nil {
		f.Header = http.Header{}
	}
	f.Header.Set(key, value)
	return f
}

// WithRetryAfter returns f with a Retry-After header of d in whole seconds,
// rounded up, since the header has no finer unit.
func (f Fault) WithRetryAfter(d time.Duration) Fault {
	secs := int64(math.Ceil(d.Seconds()))
	return f.WithHeader("Retry-After", strconv.FormatInt(max(secs, 0), 10))
}

// WithRateLimit returns f with an X-Librato-RateLimit-Std header.
func (f Fault) WithRateLimit(rl librato.RateLimit) Fault {
	return f.WithHeader(librato.HeaderRateLimitStd, rl.String())
}

func (s *Server) faultResponse(f Fault) response {
	var resp response
	switch {
	case f.Body != nil:
		resp = response{status: f.Status, body: f.Body}
	case f.rateLimitBody:
		resp = jsonResponse(f.Status, librato.RateLimitResponse{RequestTime: s.cfg.now().Unix(), Error: RateLimitError})
	default:
		resp = errorResponse(f.Status, "system", http.StatusText(f.Status))
	}
	resp.header = f.Header
	return resp
}

// FailNext makes the next n requests fail with f, after any failures queued
// before.
func (s *Server) FailNext(n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, f)
	}
}

// PendingFaults is the number of queued failures not yet used.
func (s *Server) PendingFaults() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.faults)
}

// FailRandomly makes each request that has no queued failure fail with f
// with probability p; p <= 0 turns it off. The draws come from the seeded
// source (WithSeed), so the same request sequence fails the same way.
func (s *Server) FailRandomly(p float64, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.randP, s.randFault = p, f
}

// SetLatency delays every response by d. A request whose client gives up
// during the delay is not processed, as its client will retry it.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// GoDown makes the server unreachable for d, or until Up when d <= 0: new
// connections are reset as soon as they are accepted and requests on open
// ones (including those waiting in injected latency) are reset instead of
// answered. The listener stays open, so the URL remains valid afterwards.
func (s *Server) GoDown(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.wake)
	s.wake = make(chan struct{})
	if d <= 0 {
		s.downIndef = true
		return
	}
	s.downUntil = time.Now().Add(d)
}

// Up ends a GoDown window.
func (s *Server) Up() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.downIndef, s.downUntil = false, time.Time{}
}

// IsDown reports whether the server is in a GoDown window.
func (s *Server) IsDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.downLocked()
}

func (s *Server) downLocked() bool {
	return s.downIndef || time.Now().Before(s.downUntil)
}

// SetRateLimit adds an X-Librato-RateLimit-Std header with rl to every
// response, as the service does (§5); nil removes it. A fault's own header
// takes precedence.
func (s *Server) SetRateLimit(rl *librato.RateLimit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rl != nil {
		v := *rl
		rl = &v
	}
	s.rateLimit = rl
}

// ClearFaults removes queued and random failures, latency and any GoDown
// window.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
	s.randP, s.randFault = 0, Fault{}
	s.latency = 0
	s.downIndef, s.downUntil = false, time.Time{}
}

func (s *Server) nextFaultLocked() *Fault {
	if len(s.faults) > 0 {
		f := s.faults[0]
		s.faults = s.faults[1:]
		return &f
	}
	if s.randP > 0 && s.rng.Float64() < s.randP {
		f := s.randFault
		return &f
	}
	return nil
}

// gatedListener resets connections accepted while the server is down, which
// a client sees much as a refused connection.
type gatedListener struct {
	net.Listener
	s *Server
}

func (l gatedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.s.mu.Lock()
		down := l.s.downLocked()
		if down {
			l.s.stats.Refused++
		}
		l.s.mu.Unlock()
		if !down {
			return c, nil
		}
		abort(c)
	}
}
