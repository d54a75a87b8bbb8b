// Package config is the adapter's configuration: the handler Params proto
// (config.proto) and its generated code, how Params are decoded from Mixer's
// adapter_config, their generic defaults and validation (metrics, limits,
// expiration, the seed adapter's migration), and the defaults of the
// process flags. Every default is named here, once; a backend's block
// (librato, prometheus.remote_write) is normalized by its sink package,
// which alone applies its defaults.
package config

import "time"

// Params defaults. Zero values in Params mean "use the default".
const (
	DefaultNamespace = "istio"

	DefaultLibratoURL = "https://metrics-api.librato.com"
	// SeedAdapterURL is where the seed librato adapter posted: a handler
	// migrated from its librato_email/librato_token keeps sending there.
	SeedAdapterURL                   = "https://api.appoptics.com"
	DefaultLibratoPeriod             = 60 * time.Second
	MinLibratoPeriod                 = time.Second
	MaxLibratoMeasurementsTagged     = 1000
	MaxLibratoMeasurementsLegacy     = 300
	DefaultLibratoMaxRequestBytes    = 1 << 20
	DefaultLibratoQueueSize          = 100000
	DefaultLibratoRequestTimeout     = 10 * time.Second
	DefaultLibratoMaxRetryElapsed    = 5 * time.Minute
	DefaultRemoteWriteInterval       = 15 * time.Second
	DefaultRemoteWriteMaxSamples     = 2000
	DefaultRemoteWriteCapacity       = 100000
	DefaultRemoteWriteTimeout        = 30 * time.Second
	DefaultRemoteWriteMinBackoff     = 30 * time.Millisecond
	DefaultRemoteWriteMaxBackoff     = 5 * time.Second
	DefaultRemoteWriteMaxRetryElapse = 5 * time.Minute
	DefaultOtlpProtocol              = "http/protobuf"
	DefaultOtlpServiceName           = "meshmetrics"
	DefaultOtlpInterval              = 60 * time.Second
	DefaultOtlpMaxDataPoints         = 2000
	DefaultOtlpMaxRequestBytes       = 3 << 20
	DefaultOtlpQueueSize             = 100000
	DefaultOtlpTimeout               = 10 * time.Second
	DefaultOtlpMinBackoff            = time.Second
	DefaultOtlpMaxBackoff            = 30 * time.Second
	DefaultOtlpMaxRetryElapsed       = 5 * time.Minute
	// DefaultMaxSeriesPerMetric is no cap of its own: the sink's
	// --max-series bounds every metric together (config.proto's Limits
	// says why).
	DefaultMaxSeriesPerMetric  = 0
	DefaultMaxLabelValueLength = 1024

	// Hard caps that keep one config from exhausting memory while it is
	// built: beyond them a config is refused with a field error.
	MaxBuckets          = 1000
	MaxLabelNames       = 256
	MaxMetricsPerConfig = 10000
)

// DefaultBuckets are client_golang's DefBuckets, used by Istio's adapter for a
// DISTRIBUTION without buckets.
var DefaultBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Process defaults: the flags of cmd/meshmetrics.
const (
	DefaultGRPCAddress = ":50000"
	// DefaultHTTPAddress is Istio's Prometheus adapter port, which Mixer's
	// telemetry Service already exposes as `prometheus`.
	DefaultHTTPAddress = ":42422"
	// DefaultMaxRecvMsgSize is far above grpc-go's 4 MiB default: Mixer sends a
	// whole Report batch in one call and puts no cap on its size.
	DefaultMaxRecvMsgSize = 64 << 20
	// gRPC admission, before a caller is trusted or its messages read
	// (docs/RELIABILITY.md §3): connections open at once (past the cap a
	// new one is closed at once); unary calls (HandleMetric, Validate,
	// health) and long-lived streams (access logs, one per Envoy) open at
	// once; bytes of messages being received or handled (a call reserves
	// the largest message, --max-recv-msg-size, while it receives).
	DefaultGRPCMaxConnections     = 2048
	DefaultGRPCMaxConcurrentCalls = 1024
	DefaultGRPCMaxBytesInFlight   = 256 << 20
	DefaultALSMaxStreams          = 1024
	// DefaultMaxInstancesPerRequest refuses requests that would hold the
	// ingest path for too long.
	DefaultMaxInstancesPerRequest = 200000
	DefaultMaxConnectionAge       = 60 * time.Second
	DefaultMaxConnectionAgeGrace  = 30 * time.Second
	DefaultKeepaliveTime          = 30 * time.Second
	DefaultKeepaliveTimeout       = 10 * time.Second
	// DefaultQueueCapacity is the number of instances that may wait between
	// HandleMetric and each sink.
	DefaultQueueCapacity = 1000000
	// DefaultMaxSeries caps the series one sink holds, across handlers:
	// the bound of the adapter's memory (about 0.9 GB with Istio's 20
	// labels, the chart's 1 GiB limit; config.proto's Limits says more).
	DefaultMaxSeries        = 250000
	DefaultHandlerCacheSize = 64
	// DefaultHandlerCacheMaxBytes bounds the handlers' estimated memory
	// (handler.EstimateBytes): a config of the largest size the caps allow
	// (10,000 metrics of 256 labels) is estimated at about 0.5 GiB with
	// one backend, so one such config fits.
	DefaultHandlerCacheMaxBytes int64 = 1 << 30
	// DefaultHandlerIdleTimeout: a handler config unused for this long is
	// flushed and closed.
	DefaultHandlerIdleTimeout = 10 * time.Minute
	// DefaultDedupTTL is 0: deduplication is off and every call counts. A
	// real Mixer reuses dedup_ids under load and never re-sends a call
	// (docs/RELIABILITY.md), so a repeated id from Mixer is never a retry.
	DefaultDedupTTL time.Duration = 0
	// DefaultDedupWindow is how long ids are remembered to count reused ones
	// (meshmetrics_dedup_ids_reused_total) while deduplication is off.
	DefaultDedupWindow     = time.Minute
	DefaultShutdownTimeout = 25 * time.Second
	// The HTTP server (/metrics, /healthz, /readyz): open connections
	// beyond the cap are closed at once; a scrape must be written within
	// the write timeout; idle keep-alive connections close after the idle
	// timeout; scrapes written at once beyond the cap get 503.
	DefaultHTTPMaxConnections       = 512
	DefaultHTTPWriteTimeout         = 30 * time.Second
	DefaultHTTPIdleTimeout          = time.Minute
	DefaultHTTPMaxConcurrentScrapes = 4
	// DefaultLogEvery rate-limits repeated errors: at most one line per key
	// per interval, with a count of those suppressed.
	DefaultLogEvery = 10 * time.Second
	// DefaultSpoolMaxBytes caps the on-disk spool of push sinks
	// (--spool-dir), every destination together.
	DefaultSpoolMaxBytes int64 = 1 << 30
)
