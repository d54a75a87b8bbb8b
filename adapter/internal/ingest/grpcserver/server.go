// Package grpcserver is the gRPC server every ingest registers on: TLS
// (reloaded from disk), mutual TLS with a SPIFFE allow-list, the token check
// of Mixer's `tls` authentication, keepalive and connection ageing, the gRPC
// health service, panics turned into Internal, and draining on shutdown.
package grpcserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb"
)

// Drainer is a service with long-lived streams (Envoy keeps its access-log
// stream open as long as it runs): Shutdown asks it to end them, so that
// draining does not wait for the shutdown timeout.
type Drainer interface {
	Drain()
}

// Service is one ingest's gRPC services.
type Service interface {
	// Register adds the services to the server (through a registrar that
	// wraps their handlers for admission, admission.go).
	Register(g grpc.ServiceRegistrar)
	// HealthNames are the service names the health service reports
	// SERVING until shutdown.
	HealthNames() []string
}

// Options configure a Server.
type Options struct {
	Log *logrus.Logger
	// Services are registered in order.
	Services []Service
	// TLS, when set, serves TLS (mutual when it requires client certs).
	TLS *TLSConfig
	// AllowedSPIFFE, when set, refuses TLS clients without an allowed ID.
	AllowedSPIFFE *SPIFFEAllowList
	// Token, when set, refuses calls without the shared token header.
	Token *TokenCheck
	// OnHandshakeError is told about every failed TLS handshake: why
	// (HandshakeFailure) and who.
	OnHandshakeError func(reason string, peer net.Addr, err error)
	// OnRefusedWhileDraining is told the method of every call refused
	// because shutdown has begun.
	OnRefusedWhileDraining func(fullMethod string)
	// Limits bound the calls, streams and bytes callers can make the
	// server hold (admission.go); OnRefused is told each refusal's reason.
	Limits    Limits
	OnRefused func(reason string)

	MaxRecvMsgSize        int
	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration
	KeepaliveTime         time.Duration
	KeepaliveTimeout      time.Duration
}

// Server is the gRPC server.
type Server struct {
	opts      Options
	grpc      *grpc.Server
	health    *health.Server
	admission *admission
	draining  atomic.Bool
}

// New builds the gRPC server and registers its services.
func New(o Options) (*Server, error) {
	if o.OnHandshakeError == nil {
		o.OnHandshakeError = func(string, net.Addr, error) {}
	}
	if o.OnRefusedWhileDraining == nil {
		o.OnRefusedWhileDraining = func(string) {}
	}
	if o.OnRefused == nil {
		o.OnRefused = func(string) {}
	}
	if o.MaxRecvMsgSize <= 0 {
		o.MaxRecvMsgSize = 4 << 20 // grpc-go's default
	}
	s := &Server{opts: o, health: health.NewServer()}
	var err error
	if s.admission, err = newAdmission(o.Limits, o.MaxRecvMsgSize, o.OnRefused); err != nil {
		return nil, err
	}
	opts := []grpc.ServerOption{
		// The token, the method and the caps are checked when a stream's
		// headers arrive, before any of its messages is read (admission.go).
		grpc.InTapHandle(s.tap),
		// A stream's window is what a client can send before the stream
		// asks for a message: static, so that a stream waiting for
		// admission holds at most 256 KiB (the estimator of dynamic windows
		// would grow it to 16 MiB). Not smaller: an access-log stream gets
		// a window update each time a quarter of it has been read, which
		// at 64 KiB was nearly every message (17% of the CPU per entry).
		// Connections keep a larger window.
		grpc.StaticStreamWindowSize(staticStreamWindow),
		grpc.StaticConnWindowSize(staticConnWindow),
		// Headers are read before the tap sees them: keep them small.
		grpc.MaxHeaderListSize(maxHeaderListSize),
		// Generated code marshals every message; HandleMetric requests are
		// read in place. No reflection-based fallback.
		grpc.ForceServerCodecV2(mixerpb.Codec{}),
		experimental.BufferPool(newRecvPool()),
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
	// Calls admitted just before shutdown began are refused here.
	opts = append(opts, grpc.ChainUnaryInterceptor(s.recoverPanics, s.refuseWhileDraining),
		grpc.ChainStreamInterceptor(s.recoverStreamPanics, s.refuseStreamsWhileDraining))
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
		opts = append(opts, grpc.Creds(observedCreds{TransportCredentials: credentials.NewTLS(cfg), onFail: o.OnHandshakeError}))
	}
	s.grpc = grpc.NewServer(opts...)
	reg := registrar{s: s}
	healthpb.RegisterHealthServer(reg, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for _, svc := range o.Services {
		svc.Register(reg)
		for _, name := range svc.HealthNames() {
			s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
		}
	}
	return s, nil
}

// Flow-control windows and header limits (see New).
const (
	staticStreamWindow = 256 << 10
	staticConnWindow   = 1 << 20
	maxHeaderListSize  = 64 << 10
)

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
	for _, svc := range s.opts.Services {
		if d, ok := svc.(Drainer); ok {
			d.Drain()
		}
	}
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
		s.opts.OnRefusedWhileDraining(info.FullMethod)
		return nil, status.Error(codes.Unavailable, "adapter is shutting down")
	}
	return next(ctx, req)
}

func (s *Server) recoverStreamPanics(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.opts.Log.WithFields(logrus.Fields{"method": info.FullMethod, "panic": fmt.Sprint(p)}).Error("panic in a gRPC stream handler:\n" + string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error (logged by the adapter)")
		}
	}()
	return next(srv, ss)
}

func (s *Server) refuseStreamsWhileDraining(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	if s.draining.Load() && info.FullMethod != "/grpc.health.v1.Health/Watch" {
		s.opts.OnRefusedWhileDraining(info.FullMethod)
		return status.Error(codes.Unavailable, "adapter is shutting down")
	}
	return next(srv, ss)
}
