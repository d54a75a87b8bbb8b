// Package export is the sending side every push sink shares, layered like
// the OpenTelemetry Collector's exporterhelper: a bounded queue of requests
// that drops the oldest on overflow, workers that send them, an HTTP
// client whose retries are classified (retry.go), and an optional on-disk
// spool under the queue that survives restarts (spool.go). A sink supplies
// only a plain send function, and a codec for the spool.
package export

import (
	"context"
	"errors"
	"fmt"
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
	// requests are dropped to make room. A spooled queue is bounded by the
	// spool's bytes instead.
	Capacity int
	// Workers send in parallel. Use 1 where the backend needs order (remote
	// write: samples of a series must arrive in time order).
	Workers int
	// MaxElapsed bounds the time one request may spend being retried. A
	// spooled request is then kept and tried again, until it is delivered,
	// refused, or evicted from the full spool.
	MaxElapsed time.Duration
	// OnSent and OnDrop observe outcomes (telemetry, logs).
	OnSent func(units, instances int, took time.Duration)
	OnDrop func(reason string, units, instances int, err error)
}

// Codec turns a request into the payload of a spool file and back.
type Codec[R Request] struct {
	Encode func(r R) []byte
	Decode func(payload []byte, units, instances int) (R, error)
}

// Queue holds requests until workers send them. Put never blocks on the
// backend; with a spool it waits for the request's fsync.
type Queue[R Request] struct {
	send SendFunc[R]
	opts QueueOptions

	// With a spool, requests live in sd (and on disk) instead of items.
	sd    *spoolDir
	att   *attachment
	codec Codec[R]

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

// NewQueue starts the workers of an in-memory queue.
func NewQueue[R Request](send SendFunc[R], o QueueOptions) *Queue[R] {
	q := newQueue(send, o)
	q.start(q.work)
	return q
}

// NewSpooledQueue starts a queue whose requests are kept in sp under the
// sink key (which must hold no secret), and sends first whatever an earlier
// run or sink left there for the same key. A nil sp gives NewQueue's
// in-memory queue.
func NewSpooledQueue[R Request](send SendFunc[R], o QueueOptions, sp *Spool, key string, c Codec[R]) (*Queue[R], error) {
	if sp == nil {
		return NewQueue(send, o), nil
	}
	q := newQueue(send, o)
	sd, att, err := sp.attach(key, q.opts.Workers, q.opts.OnDrop)
	if err != nil {
		q.cancel()
		return nil, fmt.Errorf("spool for %s: %w", key, err)
	}
	q.sd, q.att, q.codec = sd, att, c
	q.start(q.workSpooled)
	return q, nil
}

func newQueue[R Request](send SendFunc[R], o QueueOptions) *Queue[R] {
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
	return q
}

func (q *Queue[R]) start(work func()) {
	for i := 0; i < q.opts.Workers; i++ {
		q.wg.Add(1)
		go work()
	}
}

// Put adds r, dropping the oldest requests when r does not fit. A request
// larger than the whole capacity is dropped itself. With a spool, r is on
// disk when Put returns.
func (q *Queue[R]) Put(r R) {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		q.opts.OnDrop(DropShutdown, r.Units(), r.Instances(), errors.New("sink is closed"))
		return
	}
	if q.sd != nil {
		q.mu.Unlock()
		q.sd.put(q.att, q.codec.Encode(r), r.Units(), r.Instances())
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
	if q.sd != nil {
		return q.sd.pendingUnits()
	}
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

// workSpooled is a worker of a spooled queue: requests come from the
// destination's spool directory, which the queue of a sink closing may
// share with its successor's for a while.
func (q *Queue[R]) workSpooled() {
	defer q.wg.Done()
	for {
		e, ctx, more := q.sd.take(q.att, q.ctx)
		if e == nil {
			select {
			case <-q.att.wake:
				continue
			case <-q.ctx.Done():
				return
			}
		}
		if more {
			q.sd.signal()
		}
		q.sendSpooled(ctx, e)
	}
}

// sendSpooled sends one request of the spool. Every outcome is counted
// before the request leaves the spool's books, so that a Drain that returns
// has seen the counts.
func (q *Queue[R]) sendSpooled(ctx context.Context, e *entry) {
	payload, err := q.sd.read(e)
	var r R
	if err == nil {
		r, err = q.codec.Decode(payload, e.units, e.instances)
		if err != nil {
			err = fmt.Errorf("%w: %v", errCorrupt, err)
		}
	}
	if err != nil {
		if q.sd.isEvicted(e) { // its file went with the eviction
			q.opts.OnDrop(DropSpoolFull, e.units, e.instances, errEvicted)
		} else {
			q.sd.noteCorrupt()
			q.opts.OnDrop(DropSpoolCorrupt, e.units, e.instances, err)
		}
		q.sd.finish(e)
		return
	}
	sctx, cancel := context.WithTimeout(ctx, q.opts.MaxElapsed)
	start := time.Now()
	err = q.send(sctx, r)
	cancel()
	switch {
	case err == nil:
		// Delivered, even if the full spool had evicted it meanwhile.
		q.opts.OnSent(e.units, e.instances, time.Since(start))
		q.sd.finish(e)
	case IsPermanent(err):
		reason := DropRejected
		if e.replayed {
			reason = DropReplayRejected
		}
		q.opts.OnDrop(reason, e.units, e.instances, err)
		q.sd.finish(e)
	case q.sd.release(e):
		q.opts.OnDrop(DropSpoolFull, e.units, e.instances, fmt.Errorf("%w while being retried: %v", errEvicted, err))
		q.sd.finish(e)
	case q.ctx.Err() == nil:
		// Retries ran out of time: the request stays first in line. A
		// pause keeps a backend that fails at once from being hammered.
		t := time.NewTimer(max(min(q.opts.MaxElapsed, time.Second), 10*time.Millisecond))
		select {
		case <-t.C:
		case <-q.ctx.Done():
			t.Stop()
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
// ends. With a spool it waits for the requests queued before the call
// (another sink of the same destination may keep adding).
func (q *Queue[R]) Drain(ctx context.Context) error {
	if q.sd != nil {
		return q.sd.waitUpTo(ctx, q.sd.lastSeq())
	}
	// When ctx ends first, the waiter is woken and gives up, so that no
	// goroutine outlives the call.
	abandoned := false
	stop := context.AfterFunc(ctx, func() {
		q.mu.Lock()
		abandoned = true
		q.idle.Broadcast()
		q.mu.Unlock()
	})
	defer stop()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) > 0 || q.busy > 0 {
		if abandoned {
			return ctx.Err()
		}
		q.idle.Wait()
	}
	return nil
}

// Close stops taking requests, sends what is queued until ctx ends, then
// cancels in-flight sends and drops the rest (DropShutdown). With a spool
// the rest stays on disk for the next sink of the destination, which may be
// in the next run.
func (q *Queue[R]) Close(ctx context.Context) error {
	q.mu.Lock()
	q.closing = true
	q.mu.Unlock()
	err := q.Drain(ctx)
	q.cancel()
	q.wg.Wait()
	if q.sd != nil {
		lost, left := q.sd.detach(q.att)
		for _, e := range lost {
			q.opts.OnDrop(DropShutdown, e.units, e.instances, errors.New("not sent before the shutdown timeout, and not on disk (the spool write had failed)"))
		}
		if err != nil && left.Requests > 0 && !left.Attached {
			err = fmt.Errorf("%d requests (%d instances) not sent, kept in the spool for the next start: %w", left.Requests, left.Instances, err)
		}
		return err
	}
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
