package librato

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/config"
)

// Results of meshmetrics_sink_requests_total for this sink: the export
// helper counts them.
const (
	ResultOK       = telemetry.SendOK       // 2xx, nothing reported failed
	ResultPartial  = telemetry.SendPartial  // 2xx whose body reports failed measurements
	ResultRetry    = telemetry.SendRetry    // one more attempt of a request (5xx, 429, rate-limit 403, network)
	ResultRejected = telemetry.SendRejected // a final 4xx: dropped, not retried
	ResultFailed   = telemetry.SendFailed   // gave up: retry time exhausted or shutting down
)

// maxLoggedBody bounds how much of an error body is logged.
const maxLoggedBody = 1024

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

// authorize sets HTTP Basic auth: Librato's email and token, or, without an
// email, AppOptics' documented form, the token as user and an empty password.
func (s *Sink) authorize(req *http.Request, token string) {
	if s.cfg.email != "" {
		req.SetBasicAuth(s.cfg.email, token)
		return
	}
	req.SetBasicAuth(token, "")
}

// push makes one attempt at posting r (export.PushFunc). The export
// helper retries, times out and counts; this adds what is Librato's own: the
// token is read again for every attempt (a rotated Secret is picked up
// mid-retry), an exhausted rate limit is waited for before asking, the
// rate-limit 403 is retried, and the X-Librato-RateLimit reset names the
// wait after a 429 or that 403.
func (s *Sink) push(ctx context.Context, r *request) error {
	if err := s.waitRateLimit(ctx); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.endpoint, bytes.NewReader(r.body))
	if err != nil {
		return export.Permanent(fmt.Errorf("librato: %w", err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", s.opts.UserAgent)
	if r.gzipped {
		req.Header.Set("Content-Encoding", "gzip")
	}
	s.authorize(req, s.tok.current())

	resp, err := s.client.Do(req)
	if err != nil {
		// net/http's error carries the whole URL: redacted too.
		return export.ClassifyHTTP(nil, err, fmt.Errorf("librato: POST %s: %w", config.RedactURL(s.cfg.endpoint), config.RedactURLError(err)))
	}
	defer resp.Body.Close()
	s.noteRateLimit(resp.Header)
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return s.checkAccepted(resp.StatusCode, body, r)
	}
	//nolint:staticcheck // Librato is a name; operators grep the logs for it
	cause := fmt.Errorf("Librato refused a request (%d measurements, %d instances): POST %s: %s: %s",
		r.measurements, r.instances, config.RedactURL(s.cfg.endpoint), resp.Status, errorDetail(body))
	rateLimit403 := resp.StatusCode == http.StatusForbidden && IsRateLimitBody(body)
	err = export.ClassifyHTTP(resp, nil, cause)
	if rateLimit403 {
		err = cause // not in the generic policy: a 403 is final elsewhere
		if d, ok := export.RetryAfter(resp); ok {
			err = export.Throttle(cause, d)
		}
	}
	if _, throttled := export.ThrottleDelay(err); !throttled && !export.IsPermanent(err) && rateLimited(resp.StatusCode) {
		// A 5xx's reset says nothing about when the service is back.
		if d, ok := s.rateLimitWait(resp.Header); ok {
			err = export.Throttle(cause, d)
		}
	}
	return err
}

// checkAccepted looks for failures reported in a 2xx body: the tagged API's
// summary "failed" count, or an "errors" member (§6). The body's exact shape
// is unconfirmed, so an unparseable one counts as success.
func (s *Sink) checkAccepted(status int, body []byte, r *request) error {
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
		return nil
	}
	s.env.Limiter.Log(logrus.WarnLevel, s.name+"|partial", logrus.Fields{
		"sink": s.name, "status": status, "measurements": r.measurements, "failed": failed, "body": truncate(string(body), maxLoggedBody),
	}, "Librato accepted a request but reports failed measurements")
	return export.Partial(fmt.Errorf("librato: %d of %d measurements failed", failed, r.measurements))
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
	if d <= 0 || export.Sleep(ctx, d) {
		return nil
	}
	return fmt.Errorf("librato: waiting for the rate limit to reset: %w", ctx.Err())
}
