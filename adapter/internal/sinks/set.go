package sinks

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// Set holds the live sinks. Handlers whose params name the same destination
// share one sink and its queue, so its state (series, aggregation periods)
// survives a handler config change. A sink closes, flushing, when its last
// handler releases it; permanent sinks (the scrape endpoint) live until the
// Set closes.
type Set struct {
	capacity     int
	closeTimeout time.Duration
	onNew        func(name string)
	onClosed     func(name string)

	mu      sync.Mutex
	entries map[string]*entry
	byQueue map[*Queue]*entry
	closing sync.WaitGroup
	closed  bool
}

type entry struct {
	key       string
	q         *Queue
	refs      int
	permanent bool
}

// ErrSetClosed is returned by Acquire once the Set is closing.
var ErrSetClosed = errors.New("adapter is shutting down")

// NewSet makes a Set whose queues hold capacity samples each. A sink released
// by its last handler gets closeTimeout to flush.
func NewSet(capacity int, closeTimeout time.Duration) *Set {
	return &Set{capacity: capacity, closeTimeout: closeTimeout, entries: map[string]*entry{}, byQueue: map[*Queue]*entry{}}
}

// OnNewSink sets a function called with the name of each sink added or
// built, before the sink gets anything to drop (the adapter makes its drop
// counters exist at 0).
func (s *Set) OnNewSink(fn func(name string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onNew = fn
}

// OnSinkClosed sets a function called with the name of each sink closed
// after its last handler released it, unless a sink of the same name has
// been added since (the adapter removes its series gauges). It runs under
// the Set's lock: keep it short.
func (s *Set) OnSinkClosed(fn func(name string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onClosed = fn
}

// AddPermanent adds a sink that stays until the Set closes.
func (s *Set) AddPermanent(key string, sk Sink) *Queue {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.onNew != nil {
		s.onNew(sk.Name())
	}
	e := &entry{key: key, q: NewQueue(sk, s.capacity), permanent: true}
	s.entries[key] = e
	s.byQueue[e.q] = e
	return e.q
}

// Acquire returns the queue of the sink for key, building the sink with
// build if there is none, and counts a reference to it.
func (s *Set) Acquire(key string, build func() (Sink, error)) (*Queue, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrSetClosed
	}
	if e, ok := s.entries[key]; ok {
		e.refs++
		return e.q, nil
	}
	sk, err := build()
	if err != nil {
		return nil, err
	}
	if s.onNew != nil {
		s.onNew(sk.Name())
	}
	e := &entry{key: key, q: NewQueue(sk, s.capacity), refs: 1}
	s.entries[key] = e
	s.byQueue[e.q] = e
	return e.q, nil
}

// Release drops a reference taken by Acquire. The last one closes the sink
// in the background, flushing it.
func (s *Set) Release(q *Queue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byQueue[q]
	if !ok || e.permanent {
		return
	}
	e.refs--
	if e.refs > 0 {
		return
	}
	delete(s.entries, e.key)
	delete(s.byQueue, q)
	s.closing.Add(1)
	go func() {
		defer s.closing.Done()
		ctx, cancel := context.WithTimeout(context.Background(), s.closeTimeout)
		defer cancel()
		_ = q.Close(ctx) // the sink logs and counts its own losses
		// Under the lock, so that a new sink of the same destination,
		// acquired meanwhile, keeps what onNew made for it.
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.onClosed == nil {
			return
		}
		for _, other := range s.entries {
			if other.q.Name() == q.Name() {
				return
			}
		}
		s.onClosed(q.Name())
	}()
}

// Close closes every sink, flushing them in parallel, and waits for sinks
// already closing. Callers must stop using handlers first.
func (s *Set) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	queues := make([]*Queue, 0, len(s.entries))
	for _, e := range s.entries {
		queues = append(queues, e.q)
	}
	s.entries = map[string]*entry{}
	s.byQueue = map[*Queue]*entry{}
	s.mu.Unlock()

	errs := make([]error, len(queues))
	var wg sync.WaitGroup
	for i, q := range queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = q.Close(ctx)
		}()
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { s.closing.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

// Flush flushes every live sink, in parallel: a sink waiting on a backend
// that is down must not hold up the others.
func (s *Set) Flush(ctx context.Context) error {
	qs := s.queues()
	errs := make([]error, len(qs))
	var wg sync.WaitGroup
	for i, q := range qs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = q.Flush(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Reload has every live sink that holds credentials from files re-read
// them now (sinks.Reloader). It returns how many sinks reloaded and the
// errors of those that failed, each named by its sink.
func (s *Set) Reload() (int, error) {
	var errs []error
	n := 0
	for _, q := range s.queues() {
		r, ok := q.Sink().(Reloader)
		if !ok {
			continue
		}
		n++
		if err := r.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("sink %s: %w", q.Name(), err))
		}
	}
	return n, errors.Join(errs...)
}

// Stats lists the queues, sorted by sink name.
func (s *Set) Stats() []telemetry.QueueStat {
	qs := s.queues()
	out := make([]telemetry.QueueStat, 0, len(qs))
	for _, q := range qs {
		out = append(out, telemetry.QueueStat{Sink: q.Name(), Depth: q.Depth(), Capacity: q.Capacity()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Sink < out[j].Sink })
	return out
}

func (s *Set) queues() []*Queue {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Queue, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, e.q)
	}
	return out
}
