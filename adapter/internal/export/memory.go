package export

import (
	"context"
	"errors"
	"sync"

	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// memory is the in-memory storage: a FIFO bounded in units that drops its
// oldest requests to make room (send_queue_full).
type memory[R Request] struct {
	capacity int
	onDrop   dropFunc

	mu    sync.Mutex
	items []R
	n     int // units of items
	busy  int // requests taken and not yet settled
	wake  chan struct{}
	idle  *sync.Cond
}

func newMemory[R Request](capacity int, onDrop dropFunc) *memory[R] {
	m := &memory[R]{capacity: capacity, onDrop: onDrop, wake: make(chan struct{}, 1)}
	m.idle = sync.NewCond(&m.mu)
	return m
}

func (m *memory[R]) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// put adds r, dropping the oldest requests when r does not fit. A request
// larger than the whole capacity is dropped itself.
func (m *memory[R]) put(r R) {
	if r.Units() > m.capacity {
		m.onDrop(telemetry.DropSendQueueFull, r.Units(), r.Instances(), errors.New("request larger than the send queue"))
		return
	}
	m.mu.Lock()
	var dropped []R
	for m.n+r.Units() > m.capacity && len(m.items) > 0 {
		dropped = append(dropped, m.items[0])
		m.n -= m.items[0].Units()
		var zero R
		m.items[0] = zero
		m.items = m.items[1:]
	}
	m.items = append(m.items, r)
	m.n += r.Units()
	m.mu.Unlock()
	for _, d := range dropped {
		m.onDrop(telemetry.DropSendQueueFull, d.Units(), d.Instances(), errors.New("send queue full"))
	}
	m.signal()
}

func (m *memory[R]) take(ctx context.Context) (lease[R], bool) {
	for {
		m.mu.Lock()
		if len(m.items) > 0 {
			r := m.items[0]
			var zero R
			m.items[0] = zero
			m.items = m.items[1:]
			m.n -= r.Units()
			m.busy++
			more := len(m.items) > 0
			m.mu.Unlock()
			if more {
				m.signal() // another worker may be waiting
			}
			return &memoryLease[R]{m: m, r: r}, true
		}
		m.mu.Unlock()
		select {
		case <-m.wake:
		case <-ctx.Done():
			return nil, false
		}
	}
}

func (m *memory[R]) units() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}

func (m *memory[R]) settle() {
	m.mu.Lock()
	m.busy--
	m.idle.Broadcast()
	m.mu.Unlock()
}

// drain waits until no request is waiting or being sent. When ctx ends
// first, the waiter is woken and gives up, so that no goroutine outlives
// the call.
func (m *memory[R]) drain(ctx context.Context) error {
	abandoned := false
	stop := context.AfterFunc(ctx, func() {
		m.mu.Lock()
		abandoned = true
		m.idle.Broadcast()
		m.mu.Unlock()
	})
	defer stop()
	m.signal()
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.items) > 0 || m.busy > 0 {
		if abandoned {
			return ctx.Err()
		}
		m.idle.Wait()
	}
	return nil
}

// close drops what is left (shutdown_timeout).
func (m *memory[R]) close(drainErr error) error {
	m.mu.Lock()
	rest := m.items
	m.items, m.n = nil, 0
	m.idle.Broadcast()
	m.mu.Unlock()
	for _, r := range rest {
		m.onDrop(telemetry.DropShutdown, r.Units(), r.Instances(), errors.New("not sent before the shutdown timeout"))
	}
	return drainErr
}

type memoryLease[R Request] struct {
	m *memory[R]
	r R
}

func (l *memoryLease[R]) open(parent context.Context) (R, context.Context, bool) {
	return l.r, parent, true
}

func (l *memoryLease[R]) replayed() bool { return false }

func (l *memoryLease[R]) done() { l.m.settle() }

func (l *memoryLease[R]) drop(reason string, err error) {
	l.m.onDrop(reason, l.r.Units(), l.r.Instances(), err)
	l.m.settle()
}

func (l *memoryLease[R]) requeue(error) requeueResult { return notKept }
