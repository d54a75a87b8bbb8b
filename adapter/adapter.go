// Package adapter wires meshmetrics together: the gRPC server Mixer and
// Envoy call (HandleMetric, and with a config directory the Access Log
// Service), the handler cache, the sinks (Prometheus exposition and remote
// write, Librato, OTLP), the HTTP endpoints (/metrics, /healthz, /readyz,
// /debug/config), reloading on demand and the order of a graceful shutdown.
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
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/codes"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/attrmap"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/grpcserver"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/dedup"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/mixerless"
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

	// HTTP server of /metrics, /healthz, /readyz: connection cap, deadlines,
	// scrapes written at once, and an exporter-toolkit web config (TLS,
	// basic auth). DebugConfig serves /debug/config.
	HTTPMaxConnections       int
	HTTPWriteTimeout         time.Duration
	HTTPIdleTimeout          time.Duration
	HTTPMaxConcurrentScrapes int
	WebConfigFile            string
	DebugConfig              bool

	MaxRecvMsgSize int
	// gRPC admission, checked before a caller is trusted or its messages
	// read: connections, unary calls and access-log streams open at once,
	// and the bytes of messages being received or handled.
	GRPCMaxConnections     int
	GRPCMaxConcurrentCalls int
	GRPCMaxBytesInFlight   int64
	MaxInstancesPerRequest int
	MaxConnectionAge       time.Duration
	MaxConnectionAgeGrace  time.Duration
	KeepaliveTime          time.Duration
	KeepaliveTimeout       time.Duration

	QueueCapacity    int
	MaxSeries        int
	HandlerCacheSize int
	// HandlerCacheMaxBytes bounds the estimated memory of the cached
	// handlers (handler.EstimateBytes); a config estimated above it alone
	// is refused.
	HandlerCacheMaxBytes int64
	HandlerIdleTimeout   time.Duration
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
	// that a restart loses none of them (export's spool); SpoolMaxBytes
	// caps it.
	SpoolDir      string
	SpoolMaxBytes int64

	// Build describes the binary (cmd/meshmetrics fills it from its build
	// information) for meshmetrics_build_info.
	Build BuildInfo

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

	// ConfigDir, when set, turns on the Mixer-less mode: Envoy's Access Log
	// Service is served on the gRPC port, and the handlers, instances and
	// rules of this directory are evaluated in the adapter (see
	// docs/mixerless.md). HandleMetric keeps working side by side.
	ConfigDir string
	// ConfigReloadInterval is how often the directory is checked for changes.
	ConfigReloadInterval time.Duration
	// ALS configures the access-log path.
	ALS ALSOptions

	// Reload, when set, makes Run call Adapter.Reload for each value
	// received (cmd/meshmetrics relays SIGHUP).
	Reload <-chan os.Signal
}

// ALSOptions configure the access-log path of the Mixer-less mode.
type ALSOptions struct {
	// MixerExact builds attribute bags exactly as Istio 1.7.8's Mixer, and
	// nothing more (its response.time bug included).
	MixerExact bool
	// HeaderAttributes maps logged request headers to string attributes.
	HeaderAttributes map[string]string
	// ForwardQueue is the HandleMetric calls that may wait per handler of
	// another adapter.
	ForwardQueue int
	// MaxEntriesPerMessage caps the entries of one message.
	MaxEntriesPerMessage int
	// MaxStreams caps the access-log streams open at once (one per Envoy).
	MaxStreams int
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
	def(&o.GRPCMaxConnections, config.DefaultGRPCMaxConnections)
	def(&o.GRPCMaxConcurrentCalls, config.DefaultGRPCMaxConcurrentCalls)
	def(&o.ALS.MaxStreams, config.DefaultALSMaxStreams)
	if o.GRPCMaxBytesInFlight == 0 {
		o.GRPCMaxBytesInFlight = max(config.DefaultGRPCMaxBytesInFlight, 4*int64(o.MaxRecvMsgSize))
	}
	def(&o.HTTPMaxConnections, config.DefaultHTTPMaxConnections)
	defD(&o.HTTPWriteTimeout, config.DefaultHTTPWriteTimeout)
	defD(&o.HTTPIdleTimeout, config.DefaultHTTPIdleTimeout)
	def(&o.HTTPMaxConcurrentScrapes, config.DefaultHTTPMaxConcurrentScrapes)
	def(&o.MaxInstancesPerRequest, config.DefaultMaxInstancesPerRequest)
	defD(&o.MaxConnectionAge, config.DefaultMaxConnectionAge)
	defD(&o.MaxConnectionAgeGrace, config.DefaultMaxConnectionAgeGrace)
	defD(&o.KeepaliveTime, config.DefaultKeepaliveTime)
	defD(&o.KeepaliveTimeout, config.DefaultKeepaliveTimeout)
	def(&o.QueueCapacity, config.DefaultQueueCapacity)
	def(&o.MaxSeries, config.DefaultMaxSeries)
	def(&o.HandlerCacheSize, config.DefaultHandlerCacheSize)
	if o.HandlerCacheMaxBytes == 0 {
		o.HandlerCacheMaxBytes = config.DefaultHandlerCacheMaxBytes
	}
	defD(&o.HandlerIdleTimeout, config.DefaultHandlerIdleTimeout)
	if o.DedupTTL < 0 {
		return fmt.Errorf("--dedup-ttl must not be negative (0 turns deduplication off), got %s", o.DedupTTL)
	}
	defD(&o.ShutdownTimeout, config.DefaultShutdownTimeout)
	defD(&o.LogEvery, config.DefaultLogEvery)
	defD(&o.Tick, time.Second)
	defD(&o.ConfigReloadInterval, 2*time.Second)
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
	// httpMetrics count the HTTP server's refusals, grpcMetrics the gRPC
	// server's.
	httpMetrics *httpMetrics
	grpcMetrics *grpcMetrics
	spool       *export.Spool
	rules       *mixerless.Runtime
	// tls and token are the server's files re-read by Reload (nil when
	// not configured).
	tls   *grpcserver.TLSConfig
	token *grpcserver.TokenCheck

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
	registerBuildInfo(a.registry, o.Build)
	// Every sink's drop counters exist at 0 from its start, so that alerts
	// can be written in advance (the export helper adds a push sink's own).
	a.sinks.OnNewSink(func(name string) {
		a.metrics.InitDropped(name, telemetry.SinkDropReasons()...)
		a.metrics.InitSink(name, o.MaxSeries)
	})
	a.sinks.OnSinkClosed(a.metrics.SinkClosed)
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
	// Handler configs come with callers' calls: what is logged of them is
	// cut, and rate-limited by what happened, not by config (a caller can
	// send a new config with every call).
	a.cache = handler.NewCache(handler.Deps{Sinks: a.sinks, Factories: factories, Dedup: newDedupWindow(o.DedupTTL),
		OnClose: func(d handler.Digest) {
			a.metrics.HandlersClosed.Inc()
			limiter.Log(logrus.InfoLevel, "handler-closed", a.handlerFields(d), "handler config closed (evicted or idle)")
		}},
		handler.CacheOptions{Size: o.HandlerCacheSize, MaxBytes: o.HandlerCacheMaxBytes, IdleTimeout: o.HandlerIdleTimeout, Now: o.Now,
			OnBuild: func(d handler.Digest, p *config.Params, sinkNames []string, err error) {
				fields := a.handlerFields(d)
				if err != nil {
					reason := configErrorReason(err)
					a.metrics.ConfigErrors.WithLabelValues(reason).Inc()
					fields["reason"] = reason
					limiter.Log(logrus.WarnLevel, "handler-refused|"+reason, fields,
						"handler config refused: "+logging.Truncate(o.Secrets.RedactString(err.Error()), logging.MaxMessage))
					return
				}
				a.metrics.HandlersBuilt.Inc()
				a.metrics.LastConfigSuccess.SetToCurrentTime()
				names := make([]string, len(sinkNames))
				for i, n := range sinkNames {
					names[i] = logging.Truncate(n, logging.MaxCallerValue)
				}
				fields["metrics"], fields["sinks"] = len(p.Metrics), names
				limiter.Log(logrus.InfoLevel, "handler-built", fields, "handler config built")
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
	a.tls = tlsCfg
	refused := func(reason string) { a.metrics.AuthRefused.WithLabelValues(reason).Inc() }
	var allow *grpcserver.SPIFFEAllowList
	if len(o.AllowedSPIFFEIDs) > 0 {
		if allow, err = grpcserver.NewSPIFFEAllowList(o.AllowedSPIFFEIDs); err != nil {
			return nil, err
		}
	}
	var token *grpcserver.TokenCheck
	if o.AuthTokenFile != "" {
		if token, err = grpcserver.NewTokenCheck(o.AuthTokenFile, o.AuthHeader, o.Secrets, limiter); err != nil {
			return nil, err
		}
		token.OnRefuse = refused
		a.token = token
		if tlsCfg == nil {
			o.Log.Warn("--auth-token-file without TLS: the token travels in clear text (Mixer itself only sends it over TLS)")
		}
	}
	mixerIn := mixer.New(mixer.Options{Cache: a.cache, Metrics: a.metrics, Limiter: limiter, Secrets: o.Secrets,
		MaxInstancesPerRequest: o.MaxInstancesPerRequest, Now: o.Now})
	services := []grpcserver.Service{mixerIn}
	if o.ConfigDir != "" {
		als, err := a.mixerless(limiter)
		if err != nil {
			return nil, err
		}
		services = append(services, als)
	}
	a.grpcMetrics = newGRPCMetrics(a.registry, func() grpcserver.Admission { return a.server.Admission() })
	a.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "meshmetrics_handler_cache_bytes",
		Help: "Estimated memory of the cached handlers (see docs/RELIABILITY.md); at most --handler-cache-max-bytes.",
	}, func() float64 { return float64(a.cache.Bytes()) }))
	a.server, err = grpcserver.New(grpcserver.Options{Log: o.Log, Services: services,
		TLS: tlsCfg, AllowedSPIFFE: allow, Token: token, MaxRecvMsgSize: o.MaxRecvMsgSize,
		Limits: grpcserver.Limits{MaxCalls: o.GRPCMaxConcurrentCalls, MaxStreams: o.ALS.MaxStreams,
			MaxBytesInFlight: o.GRPCMaxBytesInFlight},
		OnRefused: func(reason string) {
			a.grpcMetrics.refused.WithLabelValues(reason).Inc()
			limiter.Log(logrus.WarnLevel, "grpc-refused|"+reason, logrus.Fields{"reason": reason},
				"gRPC call refused before it was read: "+reason)
		},
		MaxConnectionAge: o.MaxConnectionAge, MaxConnectionAgeGrace: o.MaxConnectionAgeGrace,
		KeepaliveTime: o.KeepaliveTime, KeepaliveTimeout: o.KeepaliveTimeout,
		OnHandshakeError: func(reason string, peer net.Addr, err error) {
			refused(reason)
			level := logrus.WarnLevel
			if reason == grpcserver.RefusedConnectionClosed {
				level = logrus.DebugLevel // TCP probes and scanners
			}
			// Keyed by reason, which the operator's setup decides, not by the
			// peer, which an attacker does.
			limiter.Log(level, "tls-handshake|"+reason, logrus.Fields{"peer": peer.String(), "reason": reason},
				"TLS handshake refused: "+logging.Truncate(err.Error(), 300))
		},
		OnRefusedWhileDraining: func(method string) {
			if method == mixer.HandleMetricMethod {
				a.metrics.Requests.WithLabelValues(codes.Unavailable.String()).Inc()
			}
		}})
	if err != nil {
		return nil, err
	}
	a.httpMetrics = newHTTPMetrics(a.registry)
	a.http = newHTTPServer(a.mux(), &a.opts)
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

// handlerFields name a handler config in logs: by its digest, which is all
// a HandleMetric call tells (`meshmetrics validate --digests` maps digests
// to handler CRs), and in the Mixer-less mode also by its CR and file.
func (a *Adapter) handlerFields(d handler.Digest) logrus.Fields {
	f := logrus.Fields{"handler": d.String()}
	if a.rules != nil {
		if key, source, ok := a.rules.HandlerOf(d); ok {
			f["handler_cr"], f["source"] = key, source
		}
	}
	return f
}

func configErrorReason(err error) string {
	var fe config.FieldErrors
	switch {
	case errors.Is(err, handler.ErrTooLarge):
		return telemetry.ConfigErrorTooLarge
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
	var lc net.ListenConfig
	if a.grpcLis, err = lc.Listen(context.Background(), "tcp", a.opts.GRPCAddress); err != nil {
		return fmt.Errorf("gRPC address: %w", err)
	}
	if a.httpLis, err = lc.Listen(context.Background(), "tcp", a.opts.HTTPAddress); err != nil {
		a.grpcLis.Close()
		return fmt.Errorf("HTTP address: %w", err)
	}
	if a.opts.WebConfigFile != "" {
		// Refuse a broken web config at start, not at the first scrape.
		if err := web.Validate(a.opts.WebConfigFile); err != nil {
			a.grpcLis.Close()
			a.httpLis.Close()
			return fmt.Errorf("--web.config.file: %w", err)
		}
	}
	httpLis := newIdleEvictingListener(a.httpLis, a.opts.HTTPMaxConnections, a.httpMetrics.connectionsRefused, a.httpMetrics.connectionsEvicted)
	a.http.ConnState = httpLis.connState
	grpcLis := newRefusingListener(a.grpcLis, a.opts.GRPCMaxConnections, a.grpcMetrics.connectionsRefused)
	var ctx context.Context
	ctx, a.stopCache = context.WithCancel(context.Background())
	go a.cache.Run(ctx)
	if a.rules != nil {
		go a.rules.Watch(ctx, a.opts.ConfigReloadInterval)
	}
	go func() { a.serveErr <- a.server.Serve(grpcLis) }()
	go func() {
		if err := serveHTTP(a.http, httpLis, a.opts.WebConfigFile, a.opts.Log); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.serveErr <- err
		}
	}()
	a.opts.Log.WithFields(logrus.Fields{"grpc": a.GRPCAddr(), "http": a.HTTPAddr(), "metrics": a.MetricsURL(), "tls": a.opts.TLS.Enabled(),
		"mutual_tls": a.opts.TLS.ClientCA != "", "replica": a.opts.Replica}).Info("meshmetrics serving")
	return nil
}

// GRPCAddr is the address the gRPC server listens on.
func (a *Adapter) GRPCAddr() string { return a.grpcLis.Addr().String() }

// MetricsURL is where /metrics answers, for people: a wildcard listen
// address is shown as localhost.
func (a *Adapter) MetricsURL() string {
	host, port, err := net.SplitHostPort(a.HTTPAddr())
	if err != nil {
		return "http://" + a.HTTPAddr() + "/metrics"
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/metrics"
}

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
		if a.rules != nil {
			if err := a.rules.Close(ctx); err != nil {
				errs = append(errs, err)
			}
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

// Reload re-reads now, whether or not they look changed, what the adapter
// otherwise re-reads when it sees a change: the server's TLS certificates
// and client CA, the token file, the credential files of live sinks, and
// (in the Mixer-less mode) the config directory. It is what SIGHUP does.
// What fails to load keeps the previous value in use, and the errors are
// returned together (and logged); nothing else stops.
func (a *Adapter) Reload(ctx context.Context) error {
	log := a.opts.Log
	var done []string
	var errs []error
	if a.tls != nil {
		if err := a.tls.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("TLS certificates (the previous ones stay in use): %w", err))
		} else {
			done = append(done, "TLS certificates")
		}
	}
	if a.token != nil {
		if err := a.token.Reload(); err != nil {
			errs = append(errs, fmt.Errorf("auth token (the previous one stays in use): %w", err))
		} else {
			done = append(done, "auth token")
		}
	}
	n, err := a.sinks.Reload()
	if err != nil {
		errs = append(errs, fmt.Errorf("sink credentials (the previous ones stay in use): %w", err))
	} else if n > 0 {
		done = append(done, fmt.Sprintf("credentials of %d sink%s", n, plural(n)))
	}
	if a.rules != nil && ctx.Err() == nil {
		if err := a.rules.Reload(); err != nil { //nolint:contextcheck // a reload outlives no call: its forwarders are bounded by Close
			errs = append(errs, fmt.Errorf("config directory %s (the last good config keeps running): %w", a.opts.ConfigDir, err))
		} else {
			done = append(done, "config directory "+a.opts.ConfigDir)
		}
	}
	err = errors.Join(errs...)
	fields := logrus.Fields{"reloaded": done}
	if err != nil {
		log.WithFields(fields).Error("reload incomplete: " + a.opts.Secrets.RedactString(err.Error()))
		return err
	}
	if len(done) == 0 {
		log.Info("reload: nothing to re-read (no TLS files, token file, sink credential files or config directory)")
		return nil
	}
	log.WithFields(fields).Info("reloaded")
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// Run starts the adapter, reloads on each value of Options.Reload, and
// shuts it down when ctx ends (SIGTERM, SIGINT).
func Run(ctx context.Context, o Options) error {
	a, err := New(o) //nolint:contextcheck // the rules runtime's forwarders live until Shutdown, not until a call ends
	if err != nil {
		return err
	}
	if err := a.Start(); err != nil {
		return err
	}
	var serveErr error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case serveErr = <-a.Errors():
			break wait
		case sig := <-o.Reload:
			a.opts.Log.WithField("signal", sig.String()).Info("reloading")
			_ = a.Reload(ctx) // it logs what it re-read and what failed
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), a.opts.ShutdownTimeout)
	defer cancel()
	return errors.Join(serveErr, a.Shutdown(sctx))
}

// Flush makes every sink consume what is queued and send what it holds now
// (tests and the mixertest kit use it to observe results without waiting
// for periods to end).
func (a *Adapter) Flush(ctx context.Context) error { return a.sinks.Flush(ctx) }

// mixerless builds the rules runtime of the config directory and the Access
// Log Service that feeds it.
func (a *Adapter) mixerless(limiter *logging.Limiter) (*envoyals.Service, error) {
	o := a.opts
	m := mixerless.NewMetrics(a.registry)
	var err error
	a.rules, err = mixerless.NewRuntime(mixerless.RuntimeOptions{
		ConfigDir: o.ConfigDir,
		Config: mixerless.Options{
			Mapping:  attrmap.Options{MixerExact: o.ALS.MixerExact, HeaderAttributes: o.ALS.HeaderAttributes},
			Validate: a.cache.Validate,
		},
		Cache: a.cache, Telemetry: a.metrics, Metrics: m, Log: o.Log, Limiter: limiter, Now: o.Now,
		ForwardQueue: o.ALS.ForwardQueue, MaxEntriesPerMessage: o.ALS.MaxEntriesPerMessage,
	})
	if err != nil {
		return nil, err
	}
	return envoyals.New(envoyals.Options{Sink: a.rules, Limiter: limiter,
		OnMalformed: func() { m.Skipped.WithLabelValues(mixerless.SkipMalformedMessage).Inc() }}), nil
}
