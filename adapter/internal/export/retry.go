package export

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// RetrySettings configure the retry layer.
type RetrySettings struct {
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts; each wait is jittered. A Throttle error's wait replaces it.
	MinBackoff, MaxBackoff time.Duration
	// MaxElapsed bounds the time one request may spend being retried. A
	// spooled request is then kept and tried again, until it is delivered,
	// refused, or evicted from the full spool.
	MaxElapsed time.Duration
}

// retrying attempts a request again while its error may heal (neither
// Permanent nor Partial), until MaxElapsed. It knows no transport.
type retrying[R Request] struct {
	next    sender[R]
	opts    RetrySettings
	onRetry func()
}

func (rt retrying[R]) send(ctx context.Context, r R) error {
	if rt.opts.MaxElapsed > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rt.opts.MaxElapsed)
		defer cancel()
	}
	for attempt := 0; ; attempt++ {
		err := rt.next.send(ctx, r)
		if err == nil || IsPermanent(err) || IsPartial(err) {
			return err
		}
		wait, ok := ThrottleDelay(err)
		if !ok {
			wait = Backoff(rt.opts.MinBackoff, rt.opts.MaxBackoff, attempt)
		}
		if !Sleep(ctx, wait) {
			return fmt.Errorf("gave up after %d attempts (%w): %w", attempt+1, context.Cause(ctx), err)
		}
		rt.onRetry()
	}
}

// Sleep waits d; false when ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Backoff is the wait before attempt+1: exponential from minWait, capped at
// maxWait, with "equal jitter" (half fixed, half random), so that many
// senders don't retry in step and no wait collapses to zero.
func Backoff(minWait, maxWait time.Duration, attempt int) time.Duration {
	d := float64(minWait) * math.Pow(2, float64(attempt))
	if d > float64(maxWait) || math.IsInf(d, 0) {
		d = float64(maxWait)
	}
	half := d / 2
	return time.Duration(half + rand.Float64()*half)
}
