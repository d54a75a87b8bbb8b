// Package pipeline is the sending side every push sink shares, layered like
// the OpenTelemetry Collector's exporterhelper: a bounded queue of requests
// that drops the oldest on overflow, workers that send them, and an HTTP
// client whose retries are classified (retry.go). A sink supplies only a
// plain send function.
package pipeline

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Request is what a push sink sends: one HTTP request's worth of aggregated
// data.
type Request interface {
	// Units is what the queue's capacity counts (measurements, samples).
	Units() int
	// Instances is how many Mixer instances the request carries, for the
	// drop counters that reconcile with what Mixer sent.
	Instances() int
}

// SendFunc sends one request. A Permanent error is not worth retrying; any
// other error means the request was retried until MaxElapsed.
type SendFunc[R Request] func(ctx context.Context, r R) error

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

// Drop reasons reported to QueueOptions.OnDrop.
const (
	DropOverflow  = "send_queue_full"
	DropRejected  = "backend_rejected"
	DropExhausted = "retries_exhausted"
	DropShutdown  = "shutdown_timeout"
)

// QueueOptions configure a Queue.
type QueueOptions struct {
	// Capacity in units. When a new request does not fit, the oldest
	// requests are dropped to make room.
	Capacity int
	// Workers send in parallel. Use 1 where the backend needs order (remote
	// write: samples of a series must arrive in time order).
	Workers int
	// MaxElapsed bounds the time one request may spend being retried.
	MaxElapsed time.Duration
	// OnSent and OnDrop observe outcomes (telemetry, logs).
	OnSent func(units, instances int, took time.Duration)
	OnDrop func(reason string, units, instances int, err error)
}

// Queue holds requests until workers send them. Put never blocks.
type Queue[R Request] struct {
	send SendFunc[R]
	opts QueueOptions

	mu      sync.Mutex
	items   []R
	units   int
	closing bool
	wake    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	busy    int
	idle    *sync.Cond
}

// NewQueue starts the workers.
func NewQueue[R Request](send SendFunc[R], o QueueOptions) *Queue[R] {
	if o.Workers < 1 {
		o.Workers = 1
	}
	if o.OnSent == nil {
		o.OnSent = func(int, int, time.Duration) {}
	}
	if o.OnDrop == nil {
		o.OnDrop = func(string, int, int, error) {}
	}
	q := &Queue[R]{send: send, opts: o, wake: make(chan struct{}, 1)}
	q.idle = sync.NewCond(&q.mu)
	q.ctx, q.cancel = context.WithCancel(context.Background())
	for i := 0; i < o.Workers; i++ {
		q.wg.Add(1)
		go q.work()
	}
	return q
}

// Put adds r, dropping the oldest requests when r does not fit. A request
// larger than the whole capacity is dropped itself.
func (q *Queue[R]) Put(r R) {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		q.opts.OnDrop(DropShutdown, r.Units(), r.Instances(), errors.New("sink is closed"))
		return
	}
	if r.Units() > q.opts.Capacity {
		q.mu.Unlock()
		q.opts.OnDrop(DropOverflow, r.Units(), r.Instances(), errors.New("request larger than the send queue"))
		return
	}
	var dropped []R
	for q.units+r.Units() > q.opts.Capacity && len(q.items) > 0 {
		dropped = append(dropped, q.items[0])
		q.units -= q.items[0].Units()
		var zero R
		q.items[0] = zero
		q.items = q.items[1:]
	}
	q.items = append(q.items, r)
	q.units += r.Units()
	q.mu.Unlock()
	for _, d := range dropped {
		q.opts.OnDrop(DropOverflow, d.Units(), d.Instances(), errors.New("send queue full"))
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Units is the number of units waiting (not counting requests being sent).
func (q *Queue[R]) Units() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.units
}

func (q *Queue[R]) next() (R, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var zero R
	if len(q.items) == 0 {
		if q.busy == 0 {
			q.idle.Broadcast()
		}
		return zero, false
	}
	r := q.items[0]
	q.items[0] = zero
	q.items = q.items[1:]
	q.units -= r.Units()
	q.busy++
	return r, true
}

func (q *Queue[R]) work() {
	defer q.wg.Done()
	for {
		r, ok := q.next()
		if !ok {
			select {
			case <-q.wake:
				continue
			case <-q.ctx.Done():
				return
			}
		}
		q.sendOne(r)
		q.mu.Lock()
		q.busy--
		q.mu.Unlock()
		// Another worker may be waiting for this one's wake-up.
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

func (q *Queue[R]) sendOne(r R) {
	ctx, cancel := context.WithTimeout(q.ctx, q.opts.MaxElapsed)
	defer cancel()
	start := time.Now()
	err := q.send(ctx, r)
	switch {
	case err == nil:
		q.opts.OnSent(r.Units(), r.Instances(), time.Since(start))
	case IsPermanent(err):
		q.opts.OnDrop(DropRejected, r.Units(), r.Instances(), err)
	case q.ctx.Err() != nil:
		q.opts.OnDrop(DropShutdown, r.Units(), r.Instances(), err)
	default:
		q.opts.OnDrop(DropExhausted, r.Units(), r.Instances(), err)
	}
}

// Drain waits until the queue is empty and no request is being sent, or ctx
// ends.
func (q *Queue[R]) Drain(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		q.mu.Lock()
		for len(q.items) > 0 || q.busy > 0 {
			q.idle.Wait()
		}
		q.mu.Unlock()
		close(done)
	}()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		// Wake the waiter so that its goroutine ends once work is done.
		return ctx.Err()
	}
}

// Close stops taking requests, sends what is queued until ctx ends, then
// cancels in-flight sends and drops the rest (DropShutdown).
func (q *Queue[R]) Close(ctx context.Context) error {
	q.mu.Lock()
	q.closing = true
	q.mu.Unlock()
	err := q.Drain(ctx)
	q.cancel()
	q.wg.Wait()
	q.mu.Lock()
	rest := q.items
	q.items, q.units = nil, 0
	q.idle.Broadcast()
	q.mu.Unlock()
	for _, r := range rest {
		q.opts.OnDrop(DropShutdown, r.Units(), r.Instances(), errors.New("not sent before the shutdown timeout"))
	}
	return err
}
