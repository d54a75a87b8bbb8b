// Package mixer is Mixer's way in: the HandleMetric service (requests read
// in place, their dedup_ids observed, their handler config built once and
// cached) and InfrastructureBackend.Validate. It registers on the shared
// gRPC server (grpcserver).
package mixer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gogo/googleapis/google/rpc"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/modelpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// HandleMetricService is the gRPC service name Mixer calls.
const HandleMetricService = "metric.HandleMetricService"

// HandleMetricMethod is the full method name of HandleMetric.
const HandleMetricMethod = "/" + HandleMetricService + "/HandleMetric"

// Options configure the Mixer services.
type Options struct {
	Cache   *handler.Cache
	Metrics *telemetry.Metrics
	Limiter *logging.Limiter
	Secrets *logging.Secrets

	MaxInstancesPerRequest int
	Now                    func() time.Time
}

// Service serves Mixer's calls.
type Service struct {
	opts Options
	reqs sync.Pool
}

// New makes the Mixer services.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Service{opts: o}
	s.reqs.New = func() any { return &handlemetric.Request{} }
	return s
}

// Register adds HandleMetric and InfrastructureBackend to g.
func (s *Service) Register(g grpc.ServiceRegistrar) {
	g.RegisterService(&handleMetricDesc, s)
	g.RegisterService(&infrastructureDesc, infrastructure{s})
}

// infrastructureDesc is InfrastructureBackend's service, described here
// because gogo's generated registration takes a *grpc.Server, not the
// registrar that wraps handlers for admission; names, paths and messages
// are the generated ones.
var infrastructureDesc = grpc.ServiceDesc{
	ServiceName: "istio.mixer.adapter.model.v1beta1.InfrastructureBackend",
	HandlerType: (*modelpb.InfrastructureBackendServer)(nil),
	Methods: []grpc.MethodDesc{
		unaryMethod("Validate", modelpb.InfrastructureBackendServer.Validate),
		unaryMethod("CreateSession", modelpb.InfrastructureBackendServer.CreateSession),
		unaryMethod("CloseSession", modelpb.InfrastructureBackendServer.CloseSession),
	},
	Streams:  []grpc.StreamDesc{},
	Metadata: "mixer/adapter/model/v1beta1/infrastructure_backend.proto",
}

// unaryMethod is a method of InfrastructureBackend, as generated code
// describes it.
func unaryMethod[Req any, Resp any](name string, call func(modelpb.InfrastructureBackendServer, context.Context, *Req) (Resp, error)) grpc.MethodDesc {
	full := "/istio.mixer.adapter.model.v1beta1.InfrastructureBackend/" + name
	return grpc.MethodDesc{MethodName: name, Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		in := new(Req)
		if err := dec(in); err != nil {
			return nil, err
		}
		impl := srv.(modelpb.InfrastructureBackendServer)
		if ic == nil {
			return call(impl, ctx, in)
		}
		return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, func(ctx context.Context, req any) (any, error) {
			return call(impl, ctx, req.(*Req))
		})
	}}
}

// HealthNames are the service names the gRPC health service reports.
func (s *Service) HealthNames() []string { return []string{HandleMetricService} }

// handleMetricDesc registers HandleMetric by hand: generated code would
// decode the request into gogo structs, one map and a dozen allocations per
// instance; handlemetric.Request reads it in place instead. Names and path
// are those of the generated metricpb service.
var handleMetricDesc = grpc.ServiceDesc{
	ServiceName: HandleMetricService,
	HandlerType: (*interface{})(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "HandleMetric",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			s := srv.(*Service)
			req := s.reqs.Get().(*handlemetric.Request)
			if err := dec(req); err != nil {
				s.reqs.Put(req)
				return nil, err
			}
			defer func() {
				req.Release()
				s.reqs.Put(req)
			}()
			if interceptor == nil {
				return s.handleMetric(ctx, req)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: HandleMetricMethod}
			return interceptor(ctx, req, info, func(ctx context.Context, r any) (any, error) {
				return s.handleMetric(ctx, r.(*handlemetric.Request))
			})
		},
	}},
	Streams:  []grpc.StreamDesc{},
	Metadata: "mixer/template/metric/template_handler_service.proto",
}

var reportResult = &modelpb.ReportResult{}

func (s *Service) handleMetric(_ context.Context, req *handlemetric.Request) (*modelpb.ReportResult, error) {
	start := s.opts.Now()
	m := s.opts.Metrics
	code := codes.OK
	defer func() {
		m.HandleLatency.Observe(time.Since(start).Seconds())
		m.Requests.WithLabelValues(code.String()).Inc()
	}()
	// Every value a caller controls is cut in logs and statuses, and lines
	// are rate-limited by reason, never by a caller's value (a config
	// digest, a dedup_id): 20 calls once made 105 MB of log.
	fail := func(c codes.Code, reason string, instances int, key string, err error) error {
		code = c
		if instances > 0 {
			m.InstancesRejected.WithLabelValues(reason).Add(float64(instances))
		}
		msg := logging.Truncate(err.Error(), logging.MaxMessage)
		s.opts.Limiter.Log(logrus.WarnLevel, key, logrus.Fields{"code": c.String(),
			"dedup_id": logging.Truncate(string(req.DedupID), logging.MaxCallerValue)}, msg)
		return status.Error(c, msg)
	}

	if err := req.Parse(req.Received()); err != nil {
		return nil, fail(codes.InvalidArgument, telemetry.ReasonMalformed, 0, "malformed", err)
	}
	n := req.NumInstances()
	m.InstancesReceived.Add(float64(n))
	if n > s.opts.MaxInstancesPerRequest {
		return nil, fail(codes.ResourceExhausted, telemetry.ReasonTooLarge, n, "too-large",
			fmt.Errorf("request has %d instances; the limit is %d (--max-instances-per-request)", n, s.opts.MaxInstancesPerRequest))
	}
	h, err := s.opts.Cache.Get(req.AdapterConfig)
	if err != nil {
		d := handler.DigestOf(req.AdapterConfig)
		return nil, fail(codes.InvalidArgument, telemetry.ReasonBadConfig, n, "config-refused",
			fmt.Errorf("handler config %s: %s", d, s.opts.Secrets.RedactString(err.Error())))
	}
	defer h.Done()

	o := h.Handle(req, start)
	if o.ReusedID {
		m.DedupIDsReused.Inc()
	}
	if o.Duplicate {
		m.InstancesRejected.WithLabelValues(telemetry.ReasonDuplicate).Add(float64(n))
		return reportResult, nil
	}
	if o.Malformed != nil {
		return nil, fail(codes.InvalidArgument, telemetry.ReasonMalformed, n, "malformed", o.Err())
	}
	m.InstancesAccepted.Add(float64(o.Accepted))
	if o.Truncated > 0 {
		m.LabelsTruncated.Add(float64(o.Truncated))
	}
	for r, c := range o.Rejected {
		if c > 0 {
			m.InstancesRejected.WithLabelValues(handler.Rejection(r).Reason()).Add(float64(c))
		}
	}
	for sinkName, c := range o.Dropped {
		m.Dropped(sinkName, telemetry.DropQueueFull, c)
	}
	if err := o.Err(); err != nil {
		st, _ := status.FromError(err)
		code = st.Code()
		msg := logging.Truncate(st.Message(), logging.MaxMessage)
		s.opts.Limiter.Log(logrus.WarnLevel, "outcome|"+code.String(),
			logrus.Fields{"handler": h.Digest.String(), "code": code.String()}, msg)
		return nil, status.Error(code, msg)
	}
	return reportResult, nil
}

// infrastructure serves InfrastructureBackend. A real Mixer never calls it
// for adapter CRs (its only client is the compiled-in bypass adapter);
// Validate is useful to operators and CI, the session calls are refused.
type infrastructure struct{ s *Service }

func (i infrastructure) Validate(_ context.Context, req *modelpb.ValidateRequest) (*modelpb.ValidateResponse, error) {
	a := handlemetric.Any{}
	if req.AdapterConfig != nil {
		a = handlemetric.Any{Present: true, TypeURL: []byte(req.AdapterConfig.TypeUrl), Value: req.AdapterConfig.Value}
	}
	if err := i.s.opts.Cache.Validate(a); err != nil {
		code := codes.Internal
		if errors.Is(err, config.ErrInvalid) {
			code = codes.InvalidArgument
		}
		return &modelpb.ValidateResponse{Status: &rpc.Status{Code: int32(code), Message: i.s.opts.Secrets.RedactString(err.Error())}}, nil
	}
	return &modelpb.ValidateResponse{Status: &rpc.Status{Code: int32(codes.OK)}}, nil
}

const noSessions = "meshmetrics is not session based (session_based: false): it reads its config from every HandleMetric call, and Mixer never opens sessions with out-of-process adapters"

func (infrastructure) CreateSession(context.Context, *modelpb.CreateSessionRequest) (*modelpb.CreateSessionResponse, error) {
	return nil, status.Error(codes.Unimplemented, noSessions)
}

func (infrastructure) CloseSession(context.Context, *modelpb.CloseSessionRequest) (*modelpb.CloseSessionResponse, error) {
	return nil, status.Error(codes.Unimplemented, noSessions)
}
