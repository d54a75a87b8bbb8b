// Package fakeserver is the fault injection every fake backend server of
// the tests shares (libratotest, rwtest, the OTLP receiver's next): queued
// and random failures, latency, resets, and windows when the server is down.
// A fake embeds an Injector, wraps its listener with Listener, and calls
// Intercept first in its handler; what a fault answers and how a request is
// recorded stay the fake's business.
package fakeserver

import (
	"context"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Fault is an injected failure: a response with Status, or, with Reset, a
// connection closed without any response. A faulted request must not be
// recorded as accepted.
type Fault struct {
	Status int         // response status; ignored with Reset
	Header http.Header // extra response headers
	Body   []byte      // response body; nil: the fake's default body for Status
	Reset  bool        // close the connection (TCP RST) instead of responding
	// Kind lets a fake give a fault its own meaning (Librato's rate-limit
	// body, stamped with the time of the answer).
	Kind string
}

// ConnectionReset closes the connection after the request has been read,
// without a response.
func ConnectionReset() Fault { return Fault{Reset: true} }

// WithHeader returns f with header key set to value.
func (f Fault) WithHeader(key, value string) Fault {
	f.Header = f.Header.Clone()
	if f.Header == nil {
		f.Header = http.Header{}
	}
	f.Header.Set(key, value)
	return f
}

// WithRetryAfter returns f with a Retry-After header of d in whole seconds,
// rounded up, since the header has no finer unit.
func (f Fault) WithRetryAfter(d time.Duration) Fault {
	secs := int64(math.Ceil(d.Seconds()))
	return f.WithHeader("Retry-After", strconv.FormatInt(max(secs, 0), 10))
}

// Stats counts what the injector did.
type Stats struct {
	Resets    int // requests answered by closing the connection
	Refused   int // connections reset on accept while down
	Abandoned int // requests whose client left during injected latency
}

// Injector holds the faults of one fake server. It is safe for concurrent
// use.
type Injector struct {
	mu        sync.Mutex
	faults    []Fault
	randP     float64
	randFault Fault
	rng       *rand.Rand
	latency   time.Duration
	downUntil time.Time
	downIndef bool
	// wake is closed and replaced by GoDown, so that requests waiting in
	// injected latency die with the server instead of after the delay.
	wake      chan struct{}
	done      chan struct{} // closed by Close, to cut latency short
	closeOnce sync.Once
	stats     Stats
	// BeforeReset, when set, sees each request about to be reset, so that
	// a fake records it before its client can see the reset. Set it
	// before serving.
	BeforeReset func(r *http.Request)
}

// New makes an injector whose random failures draw from seed.
func New(seed uint64) *Injector {
	return &Injector{rng: rand.New(rand.NewPCG(seed, seed)), wake: make(chan struct{}), done: make(chan struct{})}
}

// FailNext makes the next n requests fail with f, after any failures queued
// before.
func (in *Injector) FailNext(n int, f Fault) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for range n {
		in.faults = append(in.faults, f)
	}
}

// PendingFaults is the number of queued failures not yet used.
func (in *Injector) PendingFaults() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.faults)
}

// FailRandomly makes each request that has no queued failure fail with f
// with probability p; p <= 0 turns it off. The draws come from the seeded
// source, so the same request sequence fails the same way.
func (in *Injector) FailRandomly(p float64, f Fault) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.randP, in.randFault = p, f
}

// SetLatency delays every response by d. A request whose client gives up
// during the delay is not processed, as its client will retry it.
func (in *Injector) SetLatency(d time.Duration) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.latency = d
}

// GoDown makes the server unreachable for d, or until Up when d <= 0: new
// connections are reset as soon as they are accepted and requests on open
// ones (including those waiting in injected latency) are reset instead of
// answered. The listener stays open, so the URL remains valid afterwards.
func (in *Injector) GoDown(d time.Duration) {
	in.mu.Lock()
	defer in.mu.Unlock()
	close(in.wake)
	in.wake = make(chan struct{})
	if d <= 0 {
		in.downIndef = true
		return
	}
	in.downUntil = time.Now().Add(d)
}

// Up ends a GoDown window.
func (in *Injector) Up() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.downIndef, in.downUntil = false, time.Time{}
}

// IsDown reports whether the server is in a GoDown window.
func (in *Injector) IsDown() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.downLocked()
}

func (in *Injector) downLocked() bool {
	return in.downIndef || time.Now().Before(in.downUntil)
}

// ClearFaults removes queued and random failures, latency and any GoDown
// window.
func (in *Injector) ClearFaults() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.faults = nil
	in.randP, in.randFault = 0, Fault{}
	in.latency = 0
	in.downIndef, in.downUntil = false, time.Time{}
}

// Close ends every injected latency: the requests waiting are reset.
func (in *Injector) Close() { in.closeOnce.Do(func() { close(in.done) }) }

// Stats returns a snapshot of the counters.
func (in *Injector) Stats() Stats {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stats
}

func (in *Injector) nextFaultLocked() *Fault {
	if len(in.faults) > 0 {
		f := in.faults[0]
		in.faults = in.faults[1:]
		return &f
	}
	if in.randP > 0 && in.rng.Float64() < in.randP {
		f := in.randFault
		return &f
	}
	return nil
}

// Outcome is what Intercept did with a request.
type Outcome uint8

// The outcomes.
const (
	// Proceed: no fault; the fake handles the request.
	Proceed Outcome = iota
	// Faulted: the fake answers with the returned fault.
	Faulted
	// Reset: the connection was closed without a response.
	Reset
	// Abandoned: the client went away during injected latency.
	Abandoned
)

// Intercept applies the faults to a request that reached the fake's
// handler (its body read): a down window or a Reset fault resets the
// connection, latency holds it, and a queued or random fault is returned
// for the fake to answer. Only with Proceed does the fake handle the
// request itself.
func (in *Injector) Intercept(w http.ResponseWriter, r *http.Request) (*Fault, Outcome) {
	in.mu.Lock()
	down := in.downLocked()
	var f *Fault
	if !down {
		f = in.nextFaultLocked()
	}
	latency, wake := in.latency, in.wake
	in.mu.Unlock()
	if down {
		in.reset(w, r)
		return nil, Reset
	}
	if latency > 0 {
		if out := in.wait(w, r, latency, wake); out != Proceed {
			return nil, out
		}
	}
	switch {
	case f == nil:
		return nil, Proceed
	case f.Reset:
		in.reset(w, r)
		return nil, Reset
	}
	return f, Faulted
}

// wait holds a request for the latency. A request whose client leaves is
// dropped; one caught by GoDown or Close is reset, since a dead server
// accepts nothing.
func (in *Injector) wait(w http.ResponseWriter, r *http.Request, latency time.Duration, wake chan struct{}) Outcome {
	t := time.NewTimer(latency)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if in.IsDown() {
				in.reset(w, r)
				return Reset
			}
			return Proceed
		case <-r.Context().Done():
			in.mu.Lock()
			in.stats.Abandoned++
			in.mu.Unlock()
			return Abandoned
		case <-wake:
			in.mu.Lock()
			down := in.downLocked()
			wake = in.wake
			in.mu.Unlock()
			if down {
				in.reset(w, r)
				return Reset
			}
		case <-in.done:
			in.reset(w, r)
			return Reset
		}
	}
}

type connKey struct{}

// ConnContext is an http.Server's ConnContext for fakes that serve HTTP/2
// (gRPC): a request on an HTTP/2 connection cannot be hijacked, so a reset
// closes the connection found in its context, as a crashed server would,
// instead of resetting one stream.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// reset closes the connection without a response.
func (in *Injector) reset(w http.ResponseWriter, r *http.Request) {
	in.mu.Lock()
	in.stats.Resets++
	in.mu.Unlock()
	if in.BeforeReset != nil {
		in.BeforeReset(r)
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
			abort(c)
		}
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	abort(conn)
}

// abort closes c with linger 0, so that the close sends a TCP RST, as a
// crashed or restarting server would.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// Listener wraps a fake's listener so that connections accepted while the
// server is down are reset, which a client sees much as a refused
// connection.
func (in *Injector) Listener(l net.Listener) net.Listener { return gatedListener{Listener: l, in: in} }

type gatedListener struct {
	net.Listener
	in *Injector
}

func (l gatedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.in.mu.Lock()
		down := l.in.downLocked()
		if down {
			l.in.stats.Refused++
		}
		l.in.mu.Unlock()
		if !down {
			return c, nil
		}
		abort(c)
	}
}
