package sinks

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// maxQueuedBatches bounds the channel of a Queue. The real bound is the
// sample capacity; this only keeps a flood of one-sample batches from
// needing a huge channel.
const maxQueuedBatches = 1 << 16

// ErrClosed is returned by Flush on a closed queue.
var ErrClosed = errors.New("sink queue closed")

// Queue feeds one sink. Enqueue never blocks: when the queue holds its
// capacity in samples, the batch is refused and the caller counts the drop.
// One goroutine takes batches in order and hands them to the sink's Consume.
type Queue struct {
	sink     Sink
	ch       chan *Batch
	capacity int64
	depth    atomic.Int64
	pool     sync.Pool
	closing  atomic.Bool
	stopped  chan struct{}
	close    sync.Once
	closeErr error
}

// NewQueue starts a queue of capacity samples in front of s.
func NewQueue(s Sink, capacity int) *Queue {
	if capacity < 1 {
		capacity = 1
	}
	q := &Queue{
		sink:     s,
		ch:       make(chan *Batch, min(capacity, maxQueuedBatches)),
		capacity: int64(capacity),
		stopped:  make(chan struct{}),
	}
	q.pool.New = func() any { return &Batch{} }
	go q.run()
	return q
}

// Sink is the sink this queue feeds.
func (q *Queue) Sink() Sink { return q.sink }

// Name is the sink's name.
func (q *Queue) Name() string { return q.sink.Name() }

// NewBatch returns an empty batch for Enqueue.
func (q *Queue) NewBatch() *Batch { return q.pool.Get().(*Batch) }

// Recycle returns a batch that was not enqueued.
func (q *Queue) Recycle(b *Batch) {
	b.Reset()
	q.pool.Put(b)
}

// Enqueue hands b to the sink, or returns false, without blocking, when the
// queue is full or closing. After true the queue owns b.
func (q *Queue) Enqueue(b *Batch) bool {
	n := int64(len(b.Samples))
	if n == 0 {
		q.Recycle(b)
		return true
	}
	if q.closing.Load() {
		return false
	}
	if q.depth.Add(n) > q.capacity {
		q.depth.Add(-n)
		return false
	}
	select {
	case q.ch <- b:
		return true
	default:
		q.depth.Add(-n)
		return false
	}
}

// Depth is the number of samples waiting.
func (q *Queue) Depth() int { return int(q.depth.Load()) }

// Capacity is the most samples that may wait.
func (q *Queue) Capacity() int { return int(q.capacity) }

func (q *Queue) run() {
	defer close(q.stopped)
	for b := range q.ch {
		switch {
		case b.stop:
			return
		case b.flushed != nil:
			close(b.flushed)
			continue
		case b.unbind != nil:
			q.sink.Unbind(b.unbind)
			continue
		}
		q.sink.Consume(b)
		q.depth.Add(-int64(len(b.Samples)))
		q.Recycle(b)
	}
}

// Unbind releases a binding once every sample queued before the call has
// been consumed, so that a closing handler's last samples are not lost. It
// waits for room in the queue, never drops.
func (q *Queue) Unbind(b Binding) {
	if q.closing.Load() {
		return // the sink is closing; its bindings go with it
	}
	q.ch <- &Batch{unbind: b}
}

// Flush waits until every batch enqueued before the call is consumed, then
// flushes the sink.
func (q *Queue) Flush(ctx context.Context) error {
	if q.closing.Load() {
		return ErrClosed
	}
	marker := &Batch{flushed: make(chan struct{})}
	select {
	case q.ch <- marker:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-marker.flushed:
	case <-ctx.Done():
		return ctx.Err()
	}
	return q.sink.Flush(ctx)
}

// Close stops taking batches, lets the sink consume what is queued, and
// closes the sink (which flushes it). The channel is never closed, so a
// late Enqueue cannot panic; handlers make sure none happens by closing a
// queue only when no request uses it.
func (q *Queue) Close(ctx context.Context) error {
	q.close.Do(func() {
		q.closing.Store(true)
		select {
		case q.ch <- &Batch{stop: true}:
			select {
			case <-q.stopped:
			case <-ctx.Done():
				q.closeErr = fmt.Errorf("sink %s: %d samples not consumed: %w", q.Name(), q.Depth(), ctx.Err())
			}
		case <-ctx.Done():
			q.closeErr = fmt.Errorf("sink %s: %d samples not consumed: %w", q.Name(), q.Depth(), ctx.Err())
		}
		if err := q.sink.Close(ctx); err != nil && q.closeErr == nil {
			q.closeErr = err
		}
	})
	return q.closeErr
}
