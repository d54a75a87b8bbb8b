package export

import (
	"context"
	"errors"
	"time"
)

// Settings configure New.
type Settings struct {
	// Sink names the sink in telemetry, logs and the spool (its key, which
	// holds no secret).
	Sink string
	// Capacity bounds the in-memory queue, in units: when a new request
	// does not fit, the oldest are dropped (send_queue_full). A spooled
	// queue is bounded by the spool's bytes instead.
	Capacity int
	// Workers send in parallel. Use 1 where the backend needs order (remote
	// write: samples of a series in time order; Librato legacy counters).
	Workers int
	// Spool, when set, keeps the queue on disk (--spool-dir); what an
	// earlier run or sink left for Sink is sent first.
	Spool *Spool
	// Timeout bounds one attempt (0: no bound).
	Timeout   time.Duration
	Retry     RetrySettings
	Telemetry Telemetry
}

// Sender is a push sink's sending side: Put queues a request, which the
// layers below send, retry, time out and count.
type Sender[R Request] struct {
	q *queue[R]
}

// New builds a Sender over push: queue (memory, or the spool with codec),
// telemetry, retry, per-attempt timeout, push.
func New[R Request](s Settings, p PushFunc[R], codec Codec[R]) (*Sender[R], error) {
	if p == nil {
		return nil, errors.New("export: no push function")
	}
	obs := newObserver(s.Sink, s.Telemetry, s.Spool != nil)
	var next sender[R] = timeout[R]{next: push[R](p), d: s.Timeout}
	next = retrying[R]{next: next, opts: s.Retry, onRetry: obs.retried}
	next = observed[R]{next: next, obs: obs}

	var store storage[R]
	if s.Spool != nil {
		if codec.Encode == nil || codec.Decode == nil {
			return nil, errors.New("export: a spooled sender needs a codec")
		}
		sp, err := newSpooled(s.Spool, s.Sink, max(s.Workers, 1), codec, obs.dropped)
		if err != nil {
			return nil, err
		}
		store = sp
	} else {
		store = newMemory[R](s.Capacity, obs.dropped)
	}
	pause := max(min(s.Retry.MaxElapsed, time.Second), 10*time.Millisecond)
	return &Sender[R]{q: newQueue(store, next, obs.dropped, s.Workers, pause)}, nil
}

// Put queues r and returns without waiting for the backend. With a spool,
// r is on disk when Put returns.
func (s *Sender[R]) Put(r R) { s.q.put(r) }

// Units is the number of units waiting (not counting requests being sent).
func (s *Sender[R]) Units() int { return s.q.store.units() }

// Drain waits until every request queued before the call is settled
// (delivered or dropped), or ctx ends.
func (s *Sender[R]) Drain(ctx context.Context) error { return s.q.store.drain(ctx) }

// Close stops taking requests (a later Put is dropped, shutdown_timeout),
// sends what is queued until ctx ends, then cancels in-flight sends. The
// rest is dropped (shutdown_timeout), or, with a spool, left on disk for
// the next sink of the destination, which may be in the next run.
func (s *Sender[R]) Close(ctx context.Context) error { return s.q.close(ctx) }
