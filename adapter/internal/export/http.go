package export

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// HTTP helpers for push functions: the transport, and how one attempt's
// answer maps onto the retry layer's errors.

// NewHTTPClient is the client of an HTTP push function: its own transport
// (TLS as given), no overall timeout (the timeout layer bounds each
// attempt) and no retries (the retry layer's job).
func NewHTTPClient(tlsCfg *tls.Config) *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsCfg
	transport.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: transport}
}

// Retryable reports, with go-retryablehttp's policy, whether an attempt
// that gave resp and err (http.Client.Do's results, unwrapped) may succeed
// if tried again: transport errors may, but for TLS verification, bad
// schemes, bad headers and redirect loops; 429 and 5xx but 501 may; any
// other answer may not.
func Retryable(resp *http.Response, err error) bool {
	// The attempt's own context may have ended (its timeout): that is the
	// retry layer's business, so the policy sees a live one.
	retry, _ := retryablehttp.ErrorPropagatedRetryPolicy(context.Background(), resp, err)
	return retry
}

// ClassifyHTTP marks cause, the error a push function made of one attempt
// that did not succeed (resp and err as http.Client.Do gave them), for the
// retry layer: Permanent when Retryable says no, a Throttle when a
// retryable answer carries Retry-After, else plain (retried with backoff).
func ClassifyHTTP(resp *http.Response, err error, cause error) error {
	if cause == nil {
		return nil
	}
	if !Retryable(resp, err) {
		return Permanent(cause)
	}
	if resp != nil {
		if d, ok := RetryAfter(resp); ok {
			return Throttle(cause, d)
		}
	}
	return cause
}

// RetryAfter reads a Retry-After header, in seconds or as an HTTP date.
func RetryAfter(resp *http.Response) (time.Duration, bool) {
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

// ReadBody reads at most limit bytes of a body and closes it, for error
// messages.
func ReadBody(resp *http.Response, limit int64) string {
	if resp == nil || resp.Body == nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, limit))
	return string(b)
}
