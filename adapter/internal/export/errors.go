package export

import (
	"errors"
	"time"
)

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks an error that retrying cannot fix (a 4xx answer).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err was marked Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

type throttleError struct {
	err   error
	delay time.Duration
}

func (e throttleError) Error() string { return e.err.Error() }
func (e throttleError) Unwrap() error { return e.err }

// Throttle marks a retryable error for which the backend named the wait
// before the next attempt (Retry-After, a rate limit's reset): the retry
// layer waits delay instead of its backoff.
func Throttle(err error, delay time.Duration) error {
	if err == nil {
		return nil
	}
	return throttleError{err: err, delay: max(delay, 0)}
}

// ThrottleDelay is the wait a Throttle error asks for.
func ThrottleDelay(err error) (time.Duration, bool) {
	var t throttleError
	if errors.As(err, &t) {
		return t.delay, true
	}
	return 0, false
}

type partialError struct{ err error }

func (e partialError) Error() string { return e.err.Error() }
func (e partialError) Unwrap() error { return e.err }

// Partial marks a request the backend took while reporting some of its
// items as failed (Librato's 2xx summary): it is delivered, not retried,
// and counted apart (result "partial").
func Partial(err error) error {
	if err == nil {
		return nil
	}
	return partialError{err}
}

// IsPartial reports whether err was marked Partial.
func IsPartial(err error) bool {
	var p partialError
	return errors.As(err, &p)
}
