package libratotest

import (
	"net/http"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/fakeserver"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
)

// RateLimitError is the error text of the fake's rate-limit bodies (§5).
const RateLimitError = "You have hit the API limit for measurements [measure:raw_rate]. Contact: support to raise it."

// Fault is an injected failure (the shared fault injection of
// sinks/fakeserver): a response with Status, or, with Reset, a connection
// closed without any response. A faulted request is never recorded as
// accepted.
type Fault = fakeserver.Fault

// rateLimitKind asks for the flat rate-limit body, stamped with the
// request_time of the response rather than of the fault's creation.
const rateLimitKind = "librato-rate-limit"

// ServiceUnavailable is the maintenance answer, 503 (§6).
func ServiceUnavailable() Fault { return Fault{Status: http.StatusServiceUnavailable} }

// InternalServerError is a 500.
func InternalServerError() Fault { return Fault{Status: http.StatusInternalServerError} }

// TooManyRequests is a 429 with the rate-limit body. Add WithRetryAfter or
// WithRateLimit for the headers a client may honour.
func TooManyRequests() Fault {
	return Fault{Status: http.StatusTooManyRequests, Kind: rateLimitKind}
}

// RateLimitForbidden is the 403 a rate-limited account gets, with the flat
// body {"request_time":...,"error":"You have hit the API limit..."} (§5, §6).
func RateLimitForbidden() Fault {
	return Fault{Status: http.StatusForbidden, Kind: rateLimitKind}
}

// ConnectionReset closes the connection after the request has been read,
// without a response.
func ConnectionReset() Fault { return fakeserver.ConnectionReset() }

// WithRateLimit returns f with an X-Librato-RateLimit-Std header.
func WithRateLimit(f Fault, rl librato.RateLimit) Fault {
	return f.WithHeader(librato.HeaderRateLimitStd, rl.String())
}

func (s *Server) faultResponse(f Fault) response {
	var resp response
	switch {
	case f.Body != nil:
		resp = response{status: f.Status, body: f.Body}
	case f.Kind == rateLimitKind:
		resp = jsonResponse(f.Status, librato.RateLimitResponse{RequestTime: s.cfg.now().Unix(), Error: RateLimitError})
	default:
		resp = errorResponse(f.Status, "system", http.StatusText(f.Status))
	}
	resp.header = f.Header
	return resp
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
