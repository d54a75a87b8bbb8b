// Package envoyals is Envoy's way in: the Access Log Service, v3
// (envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs) and v2
// (envoy.service.accesslog.v2), HTTP and TCP entries. Each received message
// is read in place (logentry) and handed to a Sink, which must never block;
// the stream keeps being read and is answered, empty, when Envoy ends it.
// It registers on the shared gRPC server (grpcserver), whose TLS, mutual
// TLS, SPIFFE allow-list, token check, draining and panic recovery apply to
// its streams.
package envoyals

import (
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"

	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/logentry"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
)

// The services and methods Envoy calls.
const (
	ServiceV3 = "envoy.service.accesslog.v3.AccessLogService"
	ServiceV2 = "envoy.service.accesslog.v2.AccessLogService"
	MethodV3  = "/" + ServiceV3 + "/StreamAccessLogs"
	MethodV2  = "/" + ServiceV2 + "/StreamAccessLogs"
)

// Sink takes the entries of each message. It is called from the stream's
// goroutine and must not block (the rules runtime only enqueues).
type Sink interface {
	Entries(m *logentry.Message, api logentry.API)
}

// Options configure the service.
type Options struct {
	Sink    Sink
	Limiter *logging.Limiter
	// OnMalformed is told about each message that could not be read (the
	// stream goes on).
	OnMalformed func()
}

// Service serves the Access Log Service.
type Service struct {
	o        Options
	draining chan struct{}
	drain    sync.Once
}

// New makes the service.
func New(o Options) *Service {
	if o.OnMalformed == nil {
		o.OnMalformed = func() {}
	}
	return &Service{o: o, draining: make(chan struct{})}
}

// Register adds the v3 and v2 services to g.
func (s *Service) Register(g grpc.ServiceRegistrar) {
	g.RegisterService(&descV3, s)
	g.RegisterService(&descV2, s)
}

// HealthNames are the service names the gRPC health service reports.
func (s *Service) HealthNames() []string { return []string{ServiceV3, ServiceV2} }

// Drain ends every open stream once its current message is processed, so
// that Envoy reconnects to another replica while this one shuts down (Envoy
// keeps a stream open for as long as it runs).
func (s *Service) Drain() { s.drain.Do(func() { close(s.draining) }) }

// The service descriptions, registered by hand: the generated ones would
// decode each message into go-control-plane structs, a map and a dozen
// pointers per entry; rawMessage keeps the bytes for logentry instead.
var descV3 = grpc.ServiceDesc{
	ServiceName: ServiceV3,
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{StreamName: "StreamAccessLogs", ClientStreams: true,
		Handler: func(srv any, st grpc.ServerStream) error { return srv.(*Service).stream(st, logentry.APIv3) }}},
	Metadata: "envoy/service/accesslog/v3/als.proto",
}

var descV2 = grpc.ServiceDesc{
	ServiceName: ServiceV2,
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{StreamName: "StreamAccessLogs", ClientStreams: true,
		Handler: func(srv any, st grpc.ServerStream) error { return srv.(*Service).stream(st, logentry.APIv2) }}},
	Metadata: "envoy/service/accesslog/v2/als.proto",
}

// rawMessage keeps a received message's bytes (the codec's in-place hook,
// mixerpb.BufferUnmarshaler) until release: the received buffer itself when
// the message came in one, else a copy into the stream's own scratch
// (reused from message to message: no pool round trip, no clearing). A
// scratch grown beyond maxKeptScratch by a large message is let go once
// that message is processed: an idle stream keeps at most that much.
type rawMessage struct {
	buf     mem.Buffer
	scratch []byte
	data    []byte
}

func (r *rawMessage) UnmarshalBuffers(data mem.BufferSlice) error {
	r.release()
	if len(data) == 1 {
		data[0].Ref()
		r.buf = data[0]
		r.data = r.buf.ReadOnlyData()
		return nil
	}
	r.scratch = r.scratch[:0]
	for _, b := range data {
		r.scratch = append(r.scratch, b.ReadOnlyData()...)
	}
	r.data = r.scratch
	return nil
}

func (r *rawMessage) bytes() []byte { return r.data }

// HeldBytes is what the message keeps until release (grpcserver charges it
// to the bytes in flight).
func (r *rawMessage) HeldBytes() int { return len(r.data) }

// maxKeptScratch is the scratch a stream keeps between messages.
const maxKeptScratch = 64 << 10

func (r *rawMessage) release() {
	if r.buf != nil {
		r.buf.Free()
		r.buf = nil
	}
	r.data = nil
	if cap(r.scratch) > maxKeptScratch {
		r.scratch = nil
	}
}

// response is the empty StreamAccessLogsResponse (v2's encodes the same).
var response = &alsv3.StreamAccessLogsResponse{}

// stream reads messages until Envoy ends the stream, or until Drain. The
// reading goroutine processes each message under mu; draining takes mu, so
// a message being processed finishes first, and one read after it is
// dropped and logged.
func (s *Service) stream(st grpc.ServerStream, api logentry.API) error {
	var mu sync.Mutex
	stopped := false
	done := make(chan error, 1)
	go func() {
		var raw rawMessage
		var msg logentry.Message
		defer func() {
			if p := recover(); p != nil {
				// The server's interceptor recovers the handler's goroutine,
				// not this one.
				s.o.Limiter.Log(logrus.ErrorLevel, "als-panic", logrus.Fields{"panic": fmt.Sprint(p)}, "panic reading access logs:\n"+string(debug.Stack()))
				done <- status.Error(codes.Internal, "internal error (logged by the adapter)")
			}
		}()
		for {
			err := st.RecvMsg(&raw)
			if err != nil {
				done <- err
				return
			}
			if !s.process(&mu, &stopped, &raw, &msg, api) {
				done <- nil
				return
			}
		}
	}()
	select {
	case err := <-done:
		if errors.Is(err, io.EOF) {
			return st.SendMsg(response)
		}
		return err
	case <-s.draining:
		mu.Lock()
		stopped = true
		mu.Unlock()
		return nil
	}
}

// process handles one received message under mu; it reports false when the
// stream has been stopped by Drain (the message is dropped).
func (s *Service) process(mu *sync.Mutex, stopped *bool, raw *rawMessage, msg *logentry.Message, api logentry.API) bool {
	mu.Lock()
	defer mu.Unlock()
	defer raw.release()
	if *stopped {
		s.o.Limiter.Log(logrus.WarnLevel, "als-after-drain", nil, "an access-log message arrived after shutdown began and was dropped")
		return false
	}
	if err := msg.Parse(raw.bytes()); err != nil {
		s.o.OnMalformed()
		s.o.Limiter.Log(logrus.WarnLevel, "als-malformed", logrus.Fields{"api": api.String()},
			"access-log message skipped, stream kept: "+logging.Truncate(err.Error(), logging.MaxMessage))
		return true
	}
	s.o.Sink.Entries(msg, api)
	return true
}
