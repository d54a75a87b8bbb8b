// Package grpcserver is the adapter's gRPC face: Mixer's HandleMetric service
// (read in place), InfrastructureBackend.Validate, the gRPC health service,
// TLS, keepalive and connection ageing, and draining on shutdown.
package grpcserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gogo/googleapis/google/rpc"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/modelpb"
	"github.com/meshmetrics/meshmetrics/config"
)

// HandleMetricService is the gRPC service name Mixer calls.
const HandleMetricService = "metric.HandleMetricService"

// Options configure a Server.
type Options struct {
	Cache   *handler.Cache
	Metrics *telemetry.Metrics
	Log     *logrus.Logger
	Limiter *logging.Limiter
	Secrets *logging.Secrets
	// TLS, when set, serves TLS (mutual when it requires client certs).
	TLS *TLSConfig
	// AllowedSPIFFE, when set, refuses TLS clients without an allowed ID.
	AllowedSPIFFE *SPIFFEAllowList
	// Token, when set, refuses calls without the shared token header.
	Token *TokenCheck

	MaxRecvMsgSize         int
	MaxInstancesPerRequest int
	MaxConnectionAge       time.Duration
	MaxConnectionAgeGrace  time.Duration
	KeepaliveTime          time.Duration
	KeepaliveTimeout       time.Duration
	Now                    func() time.Time
}

// Server serves Mixer.
type Server struct {
	opts     Options
	grpc     *grpc.Server
	health   *health.Server
	draining atomic.Bool
	reqs     sync.Pool
}

// New builds the gRPC server and registers its services.
func New(o Options) (*Server, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{opts: o, health: health.NewServer()}
	s.reqs.New = func() any { return &handlemetric.Request{} }
	opts := []grpc.ServerOption{
		// Generated (gogo) code marshals every message; HandleMetric
		// requests are read in place. No reflection-based fallback.
		grpc.ForceServerCodecV2(mixerpb.Codec{}),
		grpc.MaxRecvMsgSize(o.MaxRecvMsgSize),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			// Mixer dials a handler once and keeps the connection; ageing it
			// out makes Mixer re-resolve and spread over replicas behind a
			// headless Service.
			MaxConnectionAge:      o.MaxConnectionAge,
			MaxConnectionAgeGrace: o.MaxConnectionAgeGrace,
			Time:                  o.KeepaliveTime,
			Timeout:               o.KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
	interceptors := []grpc.UnaryServerInterceptor{s.recoverPanics, s.refuseWhileDraining}
	if o.Token != nil {
		interceptors = append(interceptors, o.Token.unary)
	}
	opts = append(opts, grpc.ChainUnaryInterceptor(interceptors...))
	if o.AllowedSPIFFE != nil && o.TLS == nil {
		return nil, errors.New("a SPIFFE allow-list needs mutual TLS (--tls-cert, --tls-key and --tls-client-ca)")
	}
	if o.TLS != nil {
		cfg := o.TLS.ServerConfig()
		if o.AllowedSPIFFE != nil {
			if !o.TLS.Mutual() {
				return nil, errors.New("a SPIFFE allow-list needs mutual TLS (--tls-client-ca)")
			}
			base := cfg.GetConfigForClient
			cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				c, err := base(hello)
				if err == nil {
					c.VerifyConnection = o.AllowedSPIFFE.verify
				}
				return c, err
			}
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	s.grpc = grpc.NewServer(opts...)
	s.grpc.RegisterService(&handleMetricDesc, s)
	modelpb.RegisterInfrastructureBackendServer(s.grpc, infrastructure{s})
	healthpb.RegisterHealthServer(s.grpc, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(HandleMetricService, healthpb.HealthCheckResponse_SERVING)
	return s, nil
}

// Serve serves on lis until Stop or GracefulStop.
func (s *Server) Serve(lis net.Listener) error {
	err := s.grpc.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Draining reports whether shutdown has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// Shutdown marks the server NOT_SERVING, refuses new calls, and waits for
// in-flight calls until ctx ends, when it cuts them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		return fmt.Errorf("in-flight calls cut at the shutdown timeout: %w", ctx.Err())
	}
}

// handleMetricDesc registers HandleMetric by hand: generated code would
// decode the request into gogo structs, one map and a dozen allocations per
// instance; handlemetric.Request reads it in place instead. Names and path are those
// of the generated metricpb service.
var handleMetricDesc = grpc.ServiceDesc{
	ServiceName: HandleMetricService,
	HandlerType: (*interface{})(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "HandleMetric",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			s := srv.(*Server)
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
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + HandleMetricService + "/HandleMetric"}
			return interceptor(ctx, req, info, func(ctx context.Context, r any) (any, error) {
				return s.handleMetric(ctx, r.(*handlemetric.Request))
			})
		},
	}},
	Streams:  []grpc.StreamDesc{},
	Metadata: "mixer/template/metric/template_handler_service.proto",
}

var reportResult = &modelpb.ReportResult{}

func (s *Server) handleMetric(_ context.Context, req *handlemetric.Request) (*modelpb.ReportResult, error) {
	start := s.opts.Now()
	m := s.opts.Metrics
	code := codes.OK
	defer func() {
		m.HandleLatency.Observe(time.Since(start).Seconds())
		m.Requests.WithLabelValues(code.String()).Inc()
	}()
	fail := func(c codes.Code, reason string, instances int, key string, err error) error {
		code = c
		if instances > 0 {
			m.InstancesRejected.WithLabelValues(reason).Add(float64(instances))
		}
		s.opts.Limiter.Log(logrus.WarnLevel, key, logrus.Fields{"code": c.String(), "dedup_id": string(req.DedupID)}, err.Error())
		return status.Error(c, err.Error())
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
		return nil, fail(codes.InvalidArgument, telemetry.ReasonBadConfig, n, "config:"+d.String(),
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
		s.opts.Limiter.Log(logrus.WarnLevel, "outcome:"+h.Digest.String()+":"+code.String(),
			logrus.Fields{"handler": h.Digest.String(), "code": code.String()}, st.Message())
		return nil, err
	}
	return reportResult, nil
}

func (s *Server) recoverPanics(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.opts.Log.WithFields(logrus.Fields{"method": info.FullMethod, "panic": fmt.Sprint(p)}).Error("panic in a gRPC handler:\n" + string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error (logged by the adapter)")
		}
	}()
	return next(ctx, req)
}

func (s *Server) refuseWhileDraining(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if s.draining.Load() && info.FullMethod != "/grpc.health.v1.Health/Check" {
		if info.FullMethod == "/"+HandleMetricService+"/HandleMetric" {
			s.opts.Metrics.Requests.WithLabelValues(codes.Unavailable.String()).Inc()
		}
		return nil, status.Error(codes.Unavailable, "adapter is shutting down")
	}
	return next(ctx, req)
}

// infrastructure serves InfrastructureBackend. A real Mixer never calls it
// for adapter CRs (its only client is the compiled-in bypass adapter);
// Validate is useful to operators and CI, the session calls are refused.
type infrastructure struct{ s *Server }

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
