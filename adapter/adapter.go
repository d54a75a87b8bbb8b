// Package adapter wires meshmetrics together: the gRPC server Mixer calls,
// the handler cache, the sinks (Prometheus exposition and remote write,
// Librato), the HTTP endpoints (/metrics, /healthz, /readyz, /debug/config),
// and the order of a graceful shutdown.
package adapter

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/grpcserver"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/dedup"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/config"
)

// Options configure an Adapter. Zero values take the defaults of config/.
type Options struct {
	GRPCAddress string
	HTTPAddress string
	TLS         grpcserver.TLSFiles
	// AllowedSPIFFEIDs, when set, refuses mutual-TLS clients whose
	// certificate carries none of these URI SANs.
	AllowedSPIFFEIDs []string
	// AuthTokenFile, when set, requires every call to carry its token in
	// AuthHeader (default authorization; "Bearer " accepted), as Mixer's
	// `tls` authentication sends it.
	AuthTokenFile string
	AuthHeader    string

	MaxRecvMsgSize         int
	MaxInstancesPerRequest int
	MaxConnectionAge       time.Duration
	MaxConnectionAgeGrace  time.Duration
	KeepaliveTime          time.Duration
	KeepaliveTimeout       time.Duration

	QueueCapacity      int
	MaxSeries          int
	HandlerCacheSize   int
	HandlerIdleTimeout time.Duration
	// DedupTTL, when positive, drops a call whose dedup_id and content were
	// both seen within this window (for clients that retry with a stable
	// id). Zero, the default, counts every call: a real Mixer reuses ids
	// under load and never retries, so a repeated id from Mixer is data.
	DedupTTL        time.Duration
	ShutdownTimeout time.Duration
	LogEvery        time.Duration
	// Replica names this process for replica labels and tags (default: the
	// host name, which is the pod name in Kubernetes).
	Replica string
	// SpoolDir, when set, keeps the send queues of push sinks on disk, so
	// that a restart loses none of them (pipeline's spool); SpoolMaxBytes
	// caps it.
	SpoolDir      string
	SpoolMaxBytes int64

	Log     *logrus.Logger
	Secrets *logging.Secrets
	// Sinks, when set, replace the default sinks (tests use recording sinks).
	// It is called once with the environment every sink gets and the
	// registry /metrics serves; it returns permanent sinks by key and the
	// factories handlers draw from.
	Sinks func(env sinks.Env, reg *prometheus.Registry) (permanent map[string]sinks.Sink, factories []sinks.Factory, err error)
	// Now is the clock of handlers and sinks; tests replace it.
	Now func() time.Time
	// Tick is the granularity of sinks' timers (default one second).
	Tick time.Duration
}

func (o *Options) setDefaults() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if o.GRPCAddress == "" {
		o.GRPCAddress = config.DefaultGRPCAddress
	}
	if o.HTTPAddress == "" {
		o.HTTPAddress = config.DefaultHTTPAddress
	}
	def(&o.MaxRecvMsgSize, config.DefaultMaxRecvMsgSize)
	def(&o.MaxInstancesPerRequest, config.DefaultMaxInstancesPerRequest)
	defD(&o.MaxConnectionAge, config.DefaultMaxConnectionAge)
	defD(&o.MaxConnectionAgeGrace, config.DefaultMaxConnectionAgeGrace)
	defD(&o.KeepaliveTime, config.DefaultKeepaliveTime)
	defD(&o.KeepaliveTimeout, config.DefaultKeepaliveTimeout)
	def(&o.QueueCapacity, config.DefaultQueueCapacity)
	def(&o.MaxSeries, config.DefaultMaxSeries)
	def(&o.HandlerCacheSize, config.DefaultHandlerCacheSize)
	defD(&o.HandlerIdleTimeout, config.DefaultHandlerIdleTimeout)
	if o.DedupTTL < 0 {
		return fmt.Errorf("--dedup-ttl must not be negative (0 turns deduplication off), got %s", o.DedupTTL)
	}
	defD(&o.ShutdownTimeout, config.DefaultShutdownTimeout)
	defD(&o.LogEvery, config.DefaultLogEvery)
	defD(&o.Tick, time.Second)
	if o.SpoolMaxBytes == 0 {
		o.SpoolMaxBytes = config.DefaultSpoolMaxBytes
	}
	if o.Replica == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no --replica given and no host name: %w", err)
		}
		o.Replica = h
	}
	if o.Log == nil {
		o.Log = logrus.New()
	}
	if o.Secrets == nil {
		o.Secrets = &logging.Secrets{}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sinks == nil {
		o.Sinks = defaultSinks
	}
	return nil
}

// Adapter is a running meshmetrics.
type Adapter struct {
	opts     Options
	registry *prometheus.Registry
	metrics  *telemetry.Metrics
	sinks    *sinks.Set
	cache    *handler.Cache
	server   *grpcserver.Server
	http     *http.Server
	spool    *export.Spool

	// exposed are the permanent sinks whose series /metrics serves.
	exposed []textWriter

	grpcLis, httpLis net.Listener
	stopCache        context.CancelFunc
	serveErr         chan error
	shutdown         sync.Once
	shutdownErr      error
}

// New builds an adapter; Start makes it listen.
func New(o Options) (_ *Adapter, err error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	a := &Adapter{opts: o, registry: prometheus.NewRegistry(), serveErr: make(chan error, 2)}
	a.sinks = sinks.NewSet(o.QueueCapacity, o.ShutdownTimeout)
	a.metrics = telemetry.New(a.registry, func() int { return a.cache.Len() }, a.sinks)
	a.sinks.OnNewSink(a.metrics.InitSink)
	limiter := logging.NewLimiter(o.Log, o.LogEvery)
	if o.SpoolDir != "" {
		if a.spool, err = openSpool(&o, a.metrics, limiter, a.registry); err != nil {
			return nil, err
		}
		// Release the spool's lock if the adapter is not built after all.
		defer func() {
			if err != nil {
				a.spool.Close()
			}
		}()
	}
	salt := make([]byte, 32)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails on Linux
	if a.spool != nil {
		salt = a.spool.Salt()
	}
	env := sinks.Env{Log: o.Log, Limiter: limiter, Secrets: o.Secrets, Metrics: a.metrics, Replica: o.Replica,
		MaxSeries: o.MaxSeries, Now: o.Now, Tick: o.Tick, Spool: a.spool, KeySalt: salt}
	permanent, factories, err := o.Sinks(env, a.registry)
	if err != nil {
		return nil, err
	}
	for key, s := range permanent {
		a.sinks.AddPermanent(key, s)
		if tw, ok := s.(textWriter); ok {
			a.exposed = append(a.exposed, tw)
		}
	}
	a.cache = handler.NewCache(handler.Deps{Sinks: a.sinks, Factories: factories, Dedup: newDedupWindow(o.DedupTTL)},
		handler.CacheOptions{Size: o.HandlerCacheSize, IdleTimeout: o.HandlerIdleTimeout, Now: o.Now,
			OnBuild: func(d handler.Digest, p *config.Params, err error) {
				if err != nil {
					a.metrics.ConfigErrors.WithLabelValues(configErrorReason(err)).Inc()
					o.Log.WithField("handler", d.String()).Warn("handler config refused: " + o.Secrets.RedactString(err.Error()))
					return
				}
				a.metrics.HandlersBuilt.Inc()
				a.metrics.LastConfigSuccess.SetToCurrentTime()
				o.Log.WithFields(logrus.Fields{"handler": d.String(), "metrics": len(p.Metrics), "sinks": fmt.Sprintf("%+v", config.SinksOf(p))}).
					Info("handler config built")
			}})
	var tlsCfg *grpcserver.TLSConfig
	if o.TLS.Enabled() {
		if tlsCfg, err = grpcserver.NewTLSConfig(o.TLS); err != nil {
			return nil, err
		}
		tlsCfg.OnReloadError = func(err error) {
			limiter.Log(logrus.ErrorLevel, "tls-reload", nil, "TLS reload failed, keeping the previous certificates: "+err.Error())
		}
	}
	refused := func(reason string) { a.metrics.AuthRefused.WithLabelValues(reason).Inc() }
	var allow *grpcserver.SPIFFEAllowList
	if len(o.AllowedSPIFFEIDs) > 0 {
		if allow, err = grpcserver.NewSPIFFEAllowList(o.AllowedSPIFFEIDs); err != nil {
			return nil, err
		}
		allow.OnRefuse = refused
	}
	var token *grpcserver.TokenCheck
	if o.AuthTokenFile != "" {
		if token, err = grpcserver.NewTokenCheck(o.AuthTokenFile, o.AuthHeader); err != nil {
			return nil, err
		}
		o.Secrets.Add(token.Token())
		token.OnLoad = o.Secrets.Add
		token.OnRefuse = refused
		if tlsCfg == nil {
			o.Log.Warn("--auth-token-file without TLS: the token travels in clear text (Mixer itself only sends it over TLS)")
		}
	}
	mixerIn := mixer.New(mixer.Options{Cache: a.cache, Metrics: a.metrics, Limiter: limiter, Secrets: o.Secrets,
		MaxInstancesPerRequest: o.MaxInstancesPerRequest, Now: o.Now})
	a.server, err = grpcserver.New(grpcserver.Options{Log: o.Log, Services: []grpcserver.Service{mixerIn},
		TLS: tlsCfg, AllowedSPIFFE: allow, Token: token, MaxRecvMsgSize: o.MaxRecvMsgSize,
		MaxConnectionAge: o.MaxConnectionAge, MaxConnectionAgeGrace: o.MaxConnectionAgeGrace,
		KeepaliveTime: o.KeepaliveTime, KeepaliveTimeout: o.KeepaliveTimeout,
		OnRefusedWhileDraining: func(method string) {
			if method == mixer.HandleMetricMethod {
				a.metrics.Requests.WithLabelValues(codes.Unavailable.String()).Inc()
			}
		}})
	if err != nil {
		return nil, err
	}
	a.http = &http.Server{Handler: a.mux(), ReadHeaderTimeout: 10 * time.Second}
	return a, nil
}

// newDedupWindow is the window of recent dedup_ids: it always counts reused
// ids (meshmetrics_dedup_ids_reused_total) over config.DefaultDedupWindow,
// and drops duplicates only when ttl turns deduplication on.
func newDedupWindow(ttl time.Duration) *dedup.Window {
	if ttl > 0 {
		return dedup.New(dedup.Options{Window: ttl, Deduplicate: true})
	}
	return dedup.New(dedup.Options{Window: config.DefaultDedupWindow})
}

func configErrorReason(err error) string {
	var fe config.FieldErrors
	switch {
	case errors.As(err, &fe):
		return telemetry.ConfigErrorValidation
	case errors.Is(err, config.ErrInvalid):
		return telemetry.ConfigErrorDecode
	}
	return telemetry.ConfigErrorSink
}

// Start listens on the gRPC and HTTP addresses and serves in the background.
func (a *Adapter) Start() error {
	var err error
	if a.grpcLis, err = net.Listen("tcp", a.opts.GRPCAddress); err != nil {
		return fmt.Errorf("gRPC address: %w", err)
	}
	if a.httpLis, err = net.Listen("tcp", a.opts.HTTPAddress); err != nil {
		a.grpcLis.Close()
		return fmt.Errorf("HTTP address: %w", err)
	}
	var ctx context.Context
	ctx, a.stopCache = context.WithCancel(context.Background())
	go a.cache.Run(ctx)
	go func() { a.serveErr <- a.server.Serve(a.grpcLis) }()
	go func() {
		if err := a.http.Serve(a.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.serveErr <- err
		}
	}()
	a.opts.Log.WithFields(logrus.Fields{"grpc": a.GRPCAddr(), "http": a.HTTPAddr(), "tls": a.opts.TLS.Enabled(),
		"mutual_tls": a.opts.TLS.ClientCA != "", "replica": a.opts.Replica}).Info("meshmetrics serving")
	return nil
}

// GRPCAddr is the address the gRPC server listens on.
func (a *Adapter) GRPCAddr() string { return a.grpcLis.Addr().String() }

// HTTPAddr is the address of /metrics, /healthz and /readyz.
func (a *Adapter) HTTPAddr() string { return a.httpLis.Addr().String() }

// Registry is the registry /metrics serves.
func (a *Adapter) Registry() *prometheus.Registry { return a.registry }

// Metrics are the adapter's own metrics.
func (a *Adapter) Metrics() *telemetry.Metrics { return a.metrics }

// Errors reports a server that stopped on its own.
func (a *Adapter) Errors() <-chan error { return a.serveErr }

// Shutdown stops the adapter in the order that loses nothing accepted: the
// gRPC health goes NOT_SERVING and /readyz fails, new calls are refused,
// in-flight calls finish, then every sink consumes its queue and flushes. It
// all happens within ctx (--shutdown-timeout); /metrics stays up until the
// sinks are done, so a last scrape sees the final values.
func (a *Adapter) Shutdown(ctx context.Context) error {
	a.shutdown.Do(func() {
		start := time.Now()
		log := a.opts.Log
		log.Info("shutting down: draining in-flight calls")
		var errs []error
		if err := a.server.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		if a.stopCache != nil {
			a.stopCache()
		}
		log.Info("flushing sinks")
		if err := a.sinks.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flushing sinks: %w", err))
		}
		if a.spool != nil {
			// What the sinks could not send stays on disk for the next run.
			_ = a.spool.Close()
		}
		hctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = a.http.Shutdown(hctx)
		a.shutdownErr = errors.Join(errs...)
		if a.shutdownErr != nil {
			log.WithField("took", time.Since(start).String()).Error("shutdown incomplete: " + a.shutdownErr.Error())
		} else {
			log.WithField("took", time.Since(start).String()).Info("shutdown complete: nothing accepted was left unsent")
		}
	})
	return a.shutdownErr
}

// Run starts the adapter and shuts it down when ctx ends (SIGTERM, SIGINT).
func Run(ctx context.Context, o Options) error {
	a, err := New(o)
	if err != nil {
		return err
	}
	if err := a.Start(); err != nil {
		return err
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-a.Errors():
	}
	sctx, cancel := context.WithTimeout(context.Background(), a.opts.ShutdownTimeout)
	defer cancel()
	return errors.Join(serveErr, a.Shutdown(sctx))
}

// Flush makes every sink consume what is queued and send what it holds now
// (tests and the mixertest kit use it to observe results without waiting
// for periods to end).
func (a *Adapter) Flush(ctx context.Context) error { return a.sinks.Flush(ctx) }
