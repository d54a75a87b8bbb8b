package export

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// RetryOptions configure NewHTTPClient.
type RetryOptions struct {
	// Timeout bounds one attempt.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts; each wait is jittered.
	MinBackoff, MaxBackoff time.Duration
	// ServerWait reads a wait the server asked for (Retry-After, a rate-limit
	// reset). It returns false when the response says nothing.
	ServerWait func(resp *http.Response) (time.Duration, bool)
	// RetryableStatus may declare more statuses worth retrying, given the
	// response and the start of its body (Librato's rate-limit 403).
	RetryableStatus func(resp *http.Response, body []byte) bool
	// TLS configures HTTPS (custom CA, skip-verify for tests).
	TLS *tls.Config
}

// maxInspectedBody is how much of an error body RetryableStatus may see.
const maxInspectedBody = 4096

// NewHTTPClient returns a go-retryablehttp client with the pipeline's retry
// policy: network errors, 429 and 5xx (but 501) are retried, and whatever
// RetryableStatus accepts; every other answer is returned at once. Retries
// stop when the request's context ends, so the caller bounds the total time
// with a deadline (the Queue uses MaxElapsed). After the last attempt the
// last response is returned, not an error, so the caller can read its status
// and body.
func NewHTTPClient(o RetryOptions) *retryablehttp.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = o.TLS
	transport.MaxIdleConnsPerHost = 16
	c := retryablehttp.NewClient()
	c.HTTPClient = &http.Client{Transport: transport, Timeout: o.Timeout}
	c.Logger = nil
	c.RetryWaitMin = o.MinBackoff
	c.RetryWaitMax = o.MaxBackoff
	// The deadline of the request's context bounds retries, not a count.
	c.RetryMax = math.MaxInt32
	c.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		return checkRetry(ctx, resp, err, o.RetryableStatus)
	}
	c.Backoff = func(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
		return backoff(min, max, attempt, resp, o.ServerWait)
	}
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler
	return c
}

func checkRetry(ctx context.Context, resp *http.Response, err error, extra func(*http.Response, []byte) bool) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		return retryableError(err), nil
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		return true, nil
	case resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented:
		return true, nil
	case resp.StatusCode >= 400 && extra != nil:
		body := peekBody(resp)
		return extra(resp, body), nil
	}
	return false, nil
}

// retryableError reports whether a transport error may heal: connection
// refused, reset, timeout do; a bad URL or an untrusted certificate don't.
func retryableError(err error) bool {
	var ue *url.Error
	if errors.As(err, &ue) {
		var unknownAuthority x509.UnknownAuthorityError
		var certInvalid x509.CertificateInvalidError
		var hostname x509.HostnameError
		switch {
		case errors.As(ue.Err, &unknownAuthority), errors.As(ue.Err, &certInvalid), errors.As(ue.Err, &hostname):
			return false
		}
		if ue.Op == "parse" {
			return false
		}
	}
	return true
}

// peekBody reads the start of resp's body and puts it back, so that the
// caller still sees the whole body.
func peekBody(resp *http.Response) []byte {
	if resp.Body == nil {
		return nil
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, maxInspectedBody))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	return head
}

func backoff(min, max time.Duration, attempt int, resp *http.Response, serverWait func(*http.Response) (time.Duration, bool)) time.Duration {
	if resp != nil {
		if d, ok := RetryAfter(resp); ok {
			return d
		}
		if serverWait != nil {
			if d, ok := serverWait(resp); ok {
				return d
			}
		}
	}
	// Exponential, with "equal jitter": half fixed, half random, so that
	// many senders don't retry in step and no wait collapses to zero.
	d := float64(min) * math.Pow(2, float64(attempt))
	if d > float64(max) || math.IsInf(d, 0) {
		d = float64(max)
	}
	half := d / 2
	return time.Duration(half + rand.Float64()*half)
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
