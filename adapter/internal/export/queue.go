package export

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// sender is one layer of a Sender: it sends r or says why not.
type sender[R Request] interface {
	send(ctx context.Context, r R) error
}

// queue is the outermost layer: requests wait in its storage until one of
// its workers hands them to the next layer, and it settles each outcome:
// delivered, dropped for a reason, or (spool) kept for later.
type queue[R Request] struct {
	store   storage[R]
	next    sender[R]
	onDrop  dropFunc
	workers int
	// pause is how long a worker waits after a kept request's retries ran
	// out, so that a backend failing at once is not hammered.
	pause time.Duration

	mu      sync.Mutex
	closing bool
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newQueue[R Request](store storage[R], next sender[R], onDrop dropFunc, workers int, pause time.Duration) *queue[R] {
	q := &queue[R]{store: store, next: next, onDrop: onDrop, workers: max(workers, 1), pause: pause}
	q.ctx, q.cancel = context.WithCancel(context.Background())
	for range q.workers {
		q.wg.Add(1)
		go q.work()
	}
	return q
}

// put hands r to the storage, or drops it once the queue is closing.
func (q *queue[R]) put(r R) {
	q.mu.Lock()
	closing := q.closing
	q.mu.Unlock()
	if closing {
		q.onDrop(telemetry.DropShutdown, r.Units(), r.Instances(), errors.New("sink is closed"))
		return
	}
	q.store.put(r)
}

func (q *queue[R]) work() {
	defer q.wg.Done()
	for {
		l, ok := q.store.take(q.ctx)
		if !ok {
			return
		}
		q.sendOne(l)
	}
}

// sendOne sends a taken request through the next layers and settles it.
func (q *queue[R]) sendOne(l lease[R]) {
	r, ctx, ok := l.open(q.ctx)
	if !ok {
		return
	}
	err := q.next.send(ctx, r)
	switch {
	case err == nil || IsPartial(err):
		l.done()
	case IsPermanent(err):
		reason := telemetry.DropBackendRejected
		if l.replayed() {
			reason = telemetry.DropReplayRejected
		}
		l.drop(reason, err)
	default:
		switch l.requeue(err) {
		case kept:
			q.wait(q.pause)
		case evicted:
		case notKept:
			if q.ctx.Err() != nil {
				l.drop(telemetry.DropShutdown, err)
			} else {
				l.drop(telemetry.DropRetriesExceeded, err)
			}
		}
	}
}

func (q *queue[R]) wait(d time.Duration) {
	if q.ctx.Err() != nil {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-q.ctx.Done():
	}
}

// close stops taking requests, lets the workers send what is queued until
// ctx ends, then cancels in-flight sends and stops them.
func (q *queue[R]) close(ctx context.Context) error {
	q.mu.Lock()
	q.closing = true
	q.mu.Unlock()
	err := q.store.drain(ctx)
	q.cancel()
	q.wg.Wait()
	return q.store.close(err)
}
