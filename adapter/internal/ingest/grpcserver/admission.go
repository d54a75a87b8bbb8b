package grpcserver

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// Admission: what a caller can make the server hold is bounded before the
// caller is trusted and before its messages are read.
//
// grpc-go (1.85) reads a message whole before any handler or interceptor
// sees it: once a stream asks for a message, the announced length is
// granted at once in HTTP/2 flow control (transport.adjustWindow), and the
// whole body is buffered as it arrives. A token checked in an interceptor is
// therefore checked too late (50 streams of 60 MB with a wrong token took
// 3.6 GB), and so is any limit a handler applies after the fact. Two points
// come before the body:
//
//   - The tap handle (grpc.InTapHandle) sees each new stream's method and
//     metadata when its headers arrive, on the connection's reading
//     goroutine, before the stream exists for a handler. It checks the
//     token, refuses unknown methods and calls while shutting down, and
//     caps the streams open at once (unary calls and long-lived streams
//     apart), all without blocking. A refused stream is reset before a
//     byte of its body is read beyond the stream's window.
//   - The method handlers, which in grpc-go 1.85 receive the message
//     themselves (unary methods through their dec function, streams
//     through RecvMsg), on the stream's own goroutine. Every handler is
//     wrapped (Registrar): before a unary call's message is asked for, the
//     largest message the server accepts (MaxRecvMsgSize) is reserved from
//     the budget of bytes in flight, waiting there if it is spent (the
//     client can meanwhile send no more than the stream's window, a static
//     64 KiB) and refused with ResourceExhausted after AdmissionWait. Once
//     the message is read, the reservation shrinks to what the message
//     holds, until the call returns.
//
// Blocking in a mem.BufferPool instead, where grpc-go gets a buffer for each
// DATA frame, would stall the connection's reading goroutine: the streams
// whose messages are half received on that connection, and which hold the
// budget, could then never finish (a deadlock), and the pool is given frame
// sizes, not message lengths, in grpc-go 1.85.
//
// Long-lived streams (Envoy's access logs) wait for their next message for
// as long as Envoy runs, so a reservation made before RecvMsg would hold
// the budget while idle. Their messages are charged to the budget once read
// instead, and the stream waits for room before it reads the next one: a
// stream holds at most one message, which gRPC refuses before reading when
// it announces more than MaxRecvMsgSize. The bound for streams is thus
// MaxStreams × MaxRecvMsgSize in the worst case; docs/RELIABILITY.md says
// how to size it.

// Limits bound what callers can make the server hold. A zero field is no
// limit.
type Limits struct {
	// MaxCalls caps the unary calls (HandleMetric, Validate, health checks)
	// open at once, from their headers to their answer.
	MaxCalls int
	// MaxStreams caps the long-lived streams (access logs, health watches)
	// open at once.
	MaxStreams int
	// MaxBytesInFlight caps the bytes of messages being received or
	// handled (a unary call reserves MaxRecvMsgSize while it receives). It
	// must be at least MaxRecvMsgSize.
	MaxBytesInFlight int64
	// AdmissionWait is how long a call may wait for room in
	// MaxBytesInFlight (default DefaultAdmissionWait), within its own
	// deadline.
	AdmissionWait time.Duration
}

// DefaultAdmissionWait bounds a call's wait for room in the bytes in flight.
const DefaultAdmissionWait = 5 * time.Second

// Reasons a stream is refused before it is trusted, as
// meshmetrics_grpc_refused_total counts them (token and TLS refusals are
// meshmetrics_auth_refused_total's).
const (
	RefusedUnknownMethod = telemetry.GRPCUnknownMethod
	RefusedTooManyCalls  = telemetry.GRPCTooManyCalls
	RefusedTooManyStream = telemetry.GRPCTooManyStreams
	RefusedBytesInFlight = telemetry.GRPCBytesInFlight
)

// methodKind tells how a method is admitted.
type methodKind uint8

const (
	unaryMethod methodKind = iota + 1
	streamMethod
)

type method struct {
	kind   methodKind
	health bool // no token needed (kubelet probes carry none)
}

// admission holds the server's caps and what they are counting.
type admission struct {
	limits   Limits
	maxMsg   int64
	budget   *semaphore.Weighted
	inFlight atomic.Int64 // bytes reserved
	calls    atomic.Int64
	streams  atomic.Int64
	methods  map[string]method
	// refused is told about each refusal, by reason.
	refused func(reason string)
}

func newAdmission(l Limits, maxRecvMsgSize int, refused func(string)) (*admission, error) {
	if l.AdmissionWait <= 0 {
		l.AdmissionWait = DefaultAdmissionWait
	}
	a := &admission{limits: l, maxMsg: int64(maxRecvMsgSize), methods: map[string]method{}, refused: refused}
	if l.MaxBytesInFlight > 0 {
		if l.MaxBytesInFlight < a.maxMsg {
			return nil, fmt.Errorf("the bytes in flight (%d) must allow one message of the largest size (%d, --max-recv-msg-size)",
				l.MaxBytesInFlight, maxRecvMsgSize)
		}
		a.budget = semaphore.NewWeighted(l.MaxBytesInFlight)
	}
	return a, nil
}

// tap admits or refuses a new stream from its method and metadata. It runs
// on the connection's reading goroutine, under the transport's lock: it
// must not block.
func (s *Server) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	a := s.admission
	m, ok := a.methods[info.FullMethodName]
	if !ok {
		a.refused(RefusedUnknownMethod)
		return nil, status.Errorf(codes.Unimplemented, "unknown method %s", logging.Truncate(info.FullMethodName, 128))
	}
	if s.draining.Load() && !m.health {
		s.opts.OnRefusedWhileDraining(info.FullMethodName)
		return nil, status.Error(codes.Unavailable, "adapter is shutting down")
	}
	if s.opts.Token != nil && !m.health {
		if err := s.opts.Token.check(info.Header); err != nil {
			return nil, err
		}
	}
	open, limit, reason := &a.calls, a.limits.MaxCalls, RefusedTooManyCalls
	what := "calls"
	if m.kind == streamMethod {
		open, limit, reason, what = &a.streams, a.limits.MaxStreams, RefusedTooManyStream, "streams"
	}
	if n := open.Add(1); limit > 0 && n > int64(limit) {
		open.Add(-1)
		a.refused(reason)
		return nil, status.Errorf(codes.ResourceExhausted, "%d %s open at once, the adapter's limit: retry later", limit, what)
	}
	// The stream's context ends with the stream, however it ends.
	context.AfterFunc(ctx, func() { open.Add(-1) })
	return ctx, nil
}

// reserve takes n bytes of the budget, waiting up to AdmissionWait (within
// ctx) for room.
func (a *admission) reserve(ctx context.Context, n int64) error {
	if a.budget == nil || n <= 0 {
		return nil
	}
	if !a.budget.TryAcquire(n) {
		wctx, cancel := context.WithTimeout(ctx, a.limits.AdmissionWait)
		err := a.budget.Acquire(wctx, n)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			a.refused(RefusedBytesInFlight)
			return status.Errorf(codes.ResourceExhausted,
				"the adapter is receiving or handling %d MiB of messages, its limit: retry later", a.limits.MaxBytesInFlight>>20)
		}
	}
	a.inFlight.Add(n)
	return nil
}

// release gives n bytes back.
func (a *admission) release(n int64) {
	if a.budget == nil || n <= 0 {
		return
	}
	a.inFlight.Add(-n)
	a.budget.Release(n)
}

// Held is a message that tells how many bytes it keeps once decoded, until
// its handler is done with it (a message read in place keeps the received
// buffer).
type Held interface {
	HeldBytes() int
}

// heldBytes is what a decoded message keeps: HeldBytes, else its encoded
// size for generated messages, else nothing.
func heldBytes(m any) int64 {
	switch v := m.(type) {
	case Held:
		return int64(v.HeldBytes())
	case interface{ Size() int }:
		return int64(v.Size())
	}
	return 0
}

// registrar registers services with every method handler wrapped for
// admission, and records their methods for the tap.
type registrar struct {
	s *Server
}

func (r registrar) RegisterService(sd *grpc.ServiceDesc, impl any) {
	d := *sd
	health := strings.HasPrefix(d.ServiceName, "grpc.health.v1.")
	d.Methods = make([]grpc.MethodDesc, len(sd.Methods))
	for i, md := range sd.Methods {
		r.s.admission.methods["/"+d.ServiceName+"/"+md.MethodName] = method{kind: unaryMethod, health: health}
		d.Methods[i] = grpc.MethodDesc{MethodName: md.MethodName, Handler: r.s.admission.unary(md.Handler)}
	}
	d.Streams = make([]grpc.StreamDesc, len(sd.Streams))
	for i, st := range sd.Streams {
		r.s.admission.methods["/"+d.ServiceName+"/"+st.StreamName] = method{kind: streamMethod, health: health}
		st.Handler = r.s.admission.stream(st.Handler)
		d.Streams[i] = st
	}
	r.s.grpc.RegisterService(&d, impl)
}

// unary wraps a unary handler: its message is asked for only once the
// largest message fits in the budget, and what the message keeps is
// charged until the call returns.
func (a *admission) unary(h grpc.MethodHandler) grpc.MethodHandler {
	if a.budget == nil {
		return h
	}
	return func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		var held int64
		defer func() { a.release(held) }()
		gated := func(m any) error {
			if err := a.reserve(ctx, a.maxMsg); err != nil {
				return err
			}
			held = a.maxMsg
			err := dec(m)
			keep := min(heldBytes(m), held)
			if err != nil {
				keep = 0
			}
			a.release(held - keep)
			held = keep
			return err
		}
		return h(srv, ctx, gated, ic)
	}
}

// stream wraps a stream handler: each message read is charged to the
// budget until the next is asked for, and the next is not asked for while
// the budget is spent.
func (a *admission) stream(h grpc.StreamHandler) grpc.StreamHandler {
	if a.budget == nil {
		return h
	}
	return func(srv any, st grpc.ServerStream) error {
		c := &chargedStream{ServerStream: st, a: a}
		defer c.finish()
		return h(srv, c)
	}
}

// chargedStream charges each message it reads to the budget. A handler may
// read on a goroutine of its own (envoyals does), which can still be in
// RecvMsg when the handler returns: mu keeps the charge exact.
type chargedStream struct {
	grpc.ServerStream
	a *admission

	mu   sync.Mutex
	held int64
	done bool
}

func (c *chargedStream) RecvMsg(m any) error {
	// The previous message is done with: its handler asks for the next.
	c.settle()
	if err := c.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	n := min(heldBytes(m), c.a.maxMsg)
	if err := c.a.reserve(c.Context(), n); err != nil {
		return err
	}
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		c.a.release(n)
		return status.Error(codes.Canceled, "the stream has ended")
	}
	c.held = n
	c.mu.Unlock()
	return nil
}

func (c *chargedStream) settle() {
	c.mu.Lock()
	n := c.held
	c.held = 0
	c.mu.Unlock()
	c.a.release(n)
}

func (c *chargedStream) finish() {
	c.mu.Lock()
	c.done = true
	c.mu.Unlock()
	c.settle()
}

// Admission reports what the server holds now, for metrics.
type Admission struct {
	Calls, Streams int
	// BytesInFlight are the bytes reserved by calls receiving or handled,
	// and by streams' messages being handled.
	BytesInFlight int64
}

// Admission reports the open calls and streams and the bytes in flight.
func (s *Server) Admission() Admission {
	a := s.admission
	return Admission{Calls: int(a.calls.Load()), Streams: int(a.streams.Load()), BytesInFlight: a.inFlight.Load()}
}
