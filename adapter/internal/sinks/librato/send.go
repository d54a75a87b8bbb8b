package librato

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
)

// Results of meshmetrics_sink_requests_total for this sink.
const (
	ResultOK       = "ok"       // 2xx, nothing reported failed
	ResultPartial  = "partial"  // 2xx whose body reports failed measurements
	ResultRetry    = "retry"    // one more attempt of a request (5xx, 429, rate-limit 403, network)
	ResultRejected = "rejected" // a final 4xx: dropped, not retried
	ResultFailed   = "failed"   // gave up: retry time exhausted or shutting down
)

// maxLoggedBody bounds how much of an error body is logged.
const maxLoggedBody = 1024

// newClient is the pipeline's retrying client with Librato's extras: the
// rate-limit 403 is retried, the rate-limit reset is waited for, and every
// retry re-reads the token, so that a rotated Secret is picked up mid-retry.
func (s *Sink) newClient() *retryablehttp.Client {
	c := export.NewHTTPClient(export.RetryOptions{
		Timeout:    s.cfg.requestTimeout,
		MinBackoff: s.opts.MinBackoff,
		MaxBackoff: s.opts.MaxBackoff,
		ServerWait: func(resp *http.Response) (time.Duration, bool) {
			if !rateLimited(resp.StatusCode) {
				return 0, false // a 5xx: the reset says nothing about when the service is back
			}
			return s.rateLimitWait(resp.Header)
		},
		RetryableStatus: func(resp *http.Response, body []byte) bool {
			return resp.StatusCode == http.StatusForbidden && IsRateLimitBody(body)
		},
	})
	if s.opts.Transport != nil {
		c.HTTPClient.Transport = s.opts.Transport
	}
	c.RequestLogHook = func(_ retryablehttp.Logger, _ *http.Request, attempt int) {
		if attempt > 0 {
			s.env.Metrics.SinkSends.WithLabelValues(s.name, ResultRetry).Inc()
		}
	}
	c.PrepareRetry = func(req *http.Request) error {
		// The header map is shared with the previous attempt's request,
		// which the transport may still hold: replace it, don't write to it.
		req.Header = req.Header.Clone()
		s.authorize(req, s.token())
		return nil
	}
	return c
}

func rateLimited(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusForbidden
}

// rateLimitWait reads the X-Librato-RateLimit-* headers: when one of them
// has no requests remaining, the wait until its reset (by env.Now, the clock
// the service's reset is compared with). false when neither is exhausted.
func (s *Sink) rateLimitWait(h http.Header) (time.Duration, bool) {
	var wait time.Duration
	found := false
	for _, name := range []string{HeaderRateLimitStd, HeaderRateLimitAgg} {
		v := h.Get(name)
		if v == "" {
			continue
		}
		rl, err := ParseRateLimit(v)
		if err != nil || rl.Remaining > 0 {
			continue
		}
		if d := time.Unix(rl.Reset, 0).Sub(s.env.Now()); d > 0 {
			wait, found = max(wait, d), true
		}
	}
	return wait, found
}

// token is the current API token; a token file that cannot be read keeps
// the last good one, and the problem is logged.
func (s *Sink) token() string {
	t, err := s.tok.Token()
	if err != nil {
		s.env.Limiter.Log(logrus.WarnLevel, s.name+"|token", logrus.Fields{"sink": s.name},
			"cannot re-read the API token, still using the previous one: "+err.Error())
	}
	return t
}

// authorize sets HTTP Basic auth: Librato's email and token, or, without an
// email, AppOptics' documented form, the token as user and an empty password.
func (s *Sink) authorize(req *http.Request, token string) {
	if s.cfg.email != "" {
		req.SetBasicAuth(s.cfg.email, token)
		return
	}
	req.SetBasicAuth(token, "")
}

// send posts one request. It returns nil once the service took it, a
// export.Permanent error for an answer retrying cannot change, and any
// other error when retries ran out of time (the queue tells exhaustion from
// shutdown).
func (s *Sink) send(ctx context.Context, r *request) error {
	if err := s.waitRateLimit(ctx); err != nil {
		s.env.Metrics.SinkSends.WithLabelValues(s.name, ResultFailed).Inc()
		return err
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, s.cfg.endpoint, r.body)
	if err != nil {
		return export.Permanent(fmt.Errorf("librato: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", s.opts.UserAgent)
	if r.gzipped {
		req.Header.Set("Content-Encoding", "gzip")
	}
	s.authorize(req.Request, s.token())

	start := time.Now()
	resp, err := s.client.Do(req)
	s.env.Metrics.SinkSendLatency.WithLabelValues(s.name).Observe(time.Since(start).Seconds())
	if resp != nil {
		defer resp.Body.Close()
		s.noteRateLimit(resp.Header)
	}
	if err != nil {
		s.env.Metrics.SinkSends.WithLabelValues(s.name, ResultFailed).Inc()
		status := ""
		if resp != nil {
			status = " (last answer " + resp.Status + ")"
		}
		return fmt.Errorf("librato: POST %s gave up%s: %w", s.cfg.endpoint, status, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		s.checkAccepted(resp.StatusCode, body, r)
		return nil
	}
	s.env.Metrics.SinkSends.WithLabelValues(s.name, ResultRejected).Inc()
	detail := errorDetail(body)
	s.env.Limiter.Log(logrus.ErrorLevel, s.name+"|"+strconv.Itoa(resp.StatusCode), logrus.Fields{
		"sink": s.name, "status": resp.StatusCode, "measurements": r.measurements, "instances": r.instances, "body": detail,
	}, "Librato refused a request; its measurements are dropped")
	return export.Permanent(fmt.Errorf("librato: POST %s: %s: %s", s.cfg.endpoint, resp.Status, detail))
}

// checkAccepted looks for failures reported in a 2xx body: the tagged API's
// summary "failed" count, or an "errors" member (§6). The body's exact shape
// is unconfirmed, so an unparseable one counts as success.
func (s *Sink) checkAccepted(status int, body []byte, r *request) {
	var resp struct {
		MeasurementsResponse
		Errors json.RawMessage `json:"errors"`
	}
	failed := 0
	if len(bytes.TrimSpace(body)) > 0 && json.Unmarshal(body, &resp) == nil {
		failed = resp.Measurements.Summary.Failed
		if e := string(bytes.TrimSpace(resp.Errors)); failed == 0 && e != "" && e != "null" && e != "[]" && e != "{}" {
			failed = -1 // failures without a count
		}
	}
	if failed == 0 {
		s.env.Metrics.SinkSends.WithLabelValues(s.name, ResultOK).Inc()
		return
	}
	s.env.Metrics.SinkSends.WithLabelValues(s.name, ResultPartial).Inc()
	s.env.Limiter.Log(logrus.WarnLevel, s.name+"|partial", logrus.Fields{
		"sink": s.name, "status": status, "measurements": r.measurements, "failed": failed, "body": truncate(string(body), maxLoggedBody),
	}, "Librato accepted a request but reports failed measurements")
}

// errorDetail renders an error body for a log line: the API's error
// structure on one line when it parses, else the body's start.
func errorDetail(body []byte) string {
	var e ErrorResponse
	if json.Unmarshal(body, &e) == nil {
		if d := e.Errors.String(); d != "" {
			return d
		}
	}
	var rl RateLimitResponse
	if json.Unmarshal(body, &rl) == nil && rl.Error != "" {
		return rl.Error
	}
	return truncate(string(body), maxLoggedBody)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// noteRateLimit remembers an exhausted rate limit from any answer, so that
// the next request waits for the reset instead of being refused: slowing
// down before the service says no (backends.md §8).
func (s *Sink) noteRateLimit(h http.Header) {
	if d, ok := s.rateLimitWait(h); ok {
		s.pauseUntil.Store(time.Now().Add(d).UnixNano())
	}
}

func (s *Sink) waitRateLimit(ctx context.Context) error {
	d := time.Until(time.Unix(0, s.pauseUntil.Load()))
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("librato: waiting for the rate limit to reset: %w", ctx.Err())
	}
}
