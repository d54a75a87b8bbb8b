// Command meshmetrics is the Istio Mixer out-of-process metrics adapter: it
// reads flags (or their MESHMETRICS_* environment variables) and runs the
// adapter until SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter"
	"github.com/meshmetrics/meshmetrics/config"
)

func main() { os.Exit(mainCode()) }

// mainCode runs the adapter and returns the exit status, so that main's
// deferred calls run before os.Exit.
func mainCode() int {
	if len(os.Args) > 1 && os.Args[1] == "validate" {
		return validateCode(os.Args[2:], os.Getenv, os.Stdout, os.Stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP re-reads certificates, tokens and the config directory; it is
	// caught from the start, so that one sent while the adapter starts does
	// not end the process (Go's default for SIGHUP is to exit).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, hup); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "meshmetrics:", err)
		return 1
	}
	return 0
}

const envPrefix = "MESHMETRICS_"

// envName is the environment variable of a flag: --max-series is
// MESHMETRICS_MAX_SERIES, --web.config.file MESHMETRICS_WEB_CONFIG_FILE.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

type settings struct {
	opts      adapter.Options
	logFormat string
	logLevel  string
	version   bool
}

func parse(args []string, getenv func(string) string, out io.Writer) (*settings, error) {
	s := &settings{}
	o := &s.opts
	fs := flag.NewFlagSet("meshmetrics", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.GRPCAddress, "grpc-address", config.DefaultGRPCAddress, "address of the gRPC server Mixer calls (HandleMetric, health)")
	fs.StringVar(&o.HTTPAddress, "http-address", config.DefaultHTTPAddress, "address of /metrics (own metrics and Prometheus series), /healthz, /readyz and (with --debug-config) /debug/config")
	fs.StringVar(&o.TLS.Cert, "tls-cert", "", "server certificate (PEM); also "+adapter.EnvCredential)
	fs.StringVar(&o.TLS.Key, "tls-key", "", "server private key (PEM); also "+adapter.EnvPrivateKey)
	fs.StringVar(&o.TLS.ClientCA, "tls-client-ca", "", "CA that verifies client certificates; makes TLS mutual (Mixer's `mutual` authentication); also "+adapter.EnvCertificate)
	fs.Func("tls-allowed-spiffe-ids", "comma-separated SPIFFE IDs a mutual-TLS client certificate must carry one of, e.g. spiffe://cluster.local/ns/istio-system/sa/istio-mixer-service-account", func(v string) error {
		o.AllowedSPIFFEIDs = nil
		for _, id := range strings.Split(v, ",") {
			if id = strings.TrimSpace(id); id != "" {
				o.AllowedSPIFFEIDs = append(o.AllowedSPIFFEIDs, id)
			}
		}
		return nil
	})
	fs.StringVar(&o.AuthTokenFile, "auth-token-file", "", "require every call to carry this file's token (Mixer's `tls` authentication with auth_header or custom_header); re-read when it changes")
	fs.StringVar(&o.AuthHeader, "auth-header", "authorization", "header that carries the token: authorization (auth_header PLAIN or BEARER) or Mixer's custom_header")
	fs.IntVar(&o.HTTPMaxConnections, "http-max-connections", config.DefaultHTTPMaxConnections, "open HTTP connections at most; beyond, new ones are closed at once (counted in meshmetrics_http_connections_refused_total)")
	fs.DurationVar(&o.HTTPWriteTimeout, "http-write-timeout", config.DefaultHTTPWriteTimeout, "time to write a response (a scrape of /metrics); a client that does not read in time is cut off and the scrape counted as abandoned")
	fs.DurationVar(&o.HTTPIdleTimeout, "http-idle-timeout", config.DefaultHTTPIdleTimeout, "an idle keep-alive HTTP connection is closed after this long")
	fs.IntVar(&o.HTTPMaxConcurrentScrapes, "http-max-concurrent-scrapes", config.DefaultHTTPMaxConcurrentScrapes, "scrapes of /metrics written at once; more get 503 (bounds the memory scrapes take)")
	fs.StringVar(&o.WebConfigFile, "web.config.file", "", "exporter-toolkit web config (YAML) for TLS and basic authentication on the HTTP port, as Prometheus exporters take it; re-read on every new connection")
	fs.BoolVar(&o.DebugConfig, "debug-config", false, "serve /debug/config: the handler configs in use, secrets redacted (off: it shows destinations and label names to anyone who reaches the HTTP port)")
	fs.IntVar(&o.MaxRecvMsgSize, "max-recv-msg-size", config.DefaultMaxRecvMsgSize, "largest HandleMetric request in bytes (Mixer sends a whole Report batch per call)")
	fs.IntVar(&o.GRPCMaxConnections, "grpc-max-connections", config.DefaultGRPCMaxConnections, "open gRPC connections at most; beyond, new ones are closed at once (counted in meshmetrics_grpc_connections_refused_total)")
	fs.IntVar(&o.GRPCMaxConcurrentCalls, "grpc-max-concurrent-calls", config.DefaultGRPCMaxConcurrentCalls, "unary gRPC calls (HandleMetric, Validate, health) open at once; beyond, ResourceExhausted before the call is read")
	fs.Int64Var(&o.GRPCMaxBytesInFlight, "grpc-max-bytes-in-flight", 0, "bytes of gRPC messages being received or handled at once (a call reserves --max-recv-msg-size while it receives); a call waits up to 5s for room, then ResourceExhausted. At least --max-recv-msg-size; 0: 256 MiB or 4 × --max-recv-msg-size, whichever is larger")
	fs.IntVar(&o.ALS.MaxStreams, "als-max-streams", config.DefaultALSMaxStreams, "access-log streams open at once (one per Envoy); beyond, ResourceExhausted before the stream is read")
	fs.IntVar(&o.MaxInstancesPerRequest, "max-instances-per-request", config.DefaultMaxInstancesPerRequest, "requests with more instances are refused (ResourceExhausted)")
	fs.DurationVar(&o.MaxConnectionAge, "max-connection-age", config.DefaultMaxConnectionAge, "age after which a client connection is closed, so Mixer reconnects and spreads over replicas")
	fs.DurationVar(&o.MaxConnectionAgeGrace, "max-connection-age-grace", config.DefaultMaxConnectionAgeGrace, "time in-flight calls get after max-connection-age")
	fs.DurationVar(&o.KeepaliveTime, "keepalive-time", config.DefaultKeepaliveTime, "ping an idle client connection after this long")
	fs.DurationVar(&o.KeepaliveTimeout, "keepalive-timeout", config.DefaultKeepaliveTimeout, "close a connection whose ping is not answered within this")
	fs.IntVar(&o.QueueCapacity, "queue-capacity", config.DefaultQueueCapacity, "instances that may wait between HandleMetric and each sink; beyond, new ones are dropped and counted")
	fs.IntVar(&o.MaxSeries, "max-series", config.DefaultMaxSeries, "series one sink may hold across all handler configs; beyond, new series are dropped and counted")
	fs.IntVar(&o.HandlerCacheSize, "handler-cache-size", config.DefaultHandlerCacheSize, "distinct handler configs kept built")
	fs.Int64Var(&o.HandlerCacheMaxBytes, "handler-cache-max-bytes", config.DefaultHandlerCacheMaxBytes, "estimated memory of the handler configs kept built (about 700 bytes per metric and 200 per label name per backend); the least recent are closed to stay below it, and a config estimated above it alone is refused")
	fs.DurationVar(&o.HandlerIdleTimeout, "handler-idle-timeout", config.DefaultHandlerIdleTimeout, "a handler config unused this long is flushed and closed")
	fs.DurationVar(&o.DedupTTL, "dedup-ttl", config.DefaultDedupTTL, "off (0) by default: every call counts, since a real Mixer reuses dedup_ids under load and never retries. When set, a call whose dedup_id and content both match a call seen within this window is not counted again (for clients that retry with a stable id)")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", config.DefaultShutdownTimeout, "time to drain calls and flush sinks on SIGTERM; keep it below the pod's terminationGracePeriodSeconds")
	fs.StringVar(&o.Replica, "replica", "", "name of this replica for replica labels/tags (default: the host name, i.e. the pod name)")
	fs.StringVar(&o.SpoolDir, "spool-dir", "", "keep the send queues of push sinks (remote write, OTLP, Librato) in this directory, so that a crash or restart loses none of them; empty: in memory only (see docs/RELIABILITY.md)")
	fs.Int64Var(&o.SpoolMaxBytes, "spool-max-bytes", config.DefaultSpoolMaxBytes, "cap of --spool-dir, every destination together; beyond, the oldest requests are dropped (spool_full)")
	fs.StringVar(&o.ConfigDir, "config-dir", "", "Mixer-less mode: serve Envoy's Access Log Service (v3 and v2) on the gRPC port and evaluate the handlers, instances and rules of this directory (YAML, recursive; Istio's attribute manifests and the meshmetrics adapter and metric template are built in); see docs/mixerless.md")
	fs.DurationVar(&o.ConfigReloadInterval, "config-reload-interval", 2*time.Second, "how often --config-dir is checked for changes; a change is applied only when the whole directory is valid")
	fs.BoolVar(&o.ALS.MixerExact, "als-mixer-exact", false, "build attribute bags from access-log entries exactly as Istio 1.7.8's Mixer did (its response.time bug included), without the attributes meshmetrics adds")
	fs.Func("als-header-attributes", "comma-separated header=attribute pairs: logged request headers that fill string attributes, e.g. x-source-workload=source.workload.name", func(v string) error {
		m, err := headerAttributes(v)
		o.ALS.HeaderAttributes = m
		return err
	})
	fs.IntVar(&o.ALS.ForwardQueue, "als-forward-queue", 1000, "HandleMetric calls that may wait for each handler of another out-of-process adapter; beyond, calls are dropped and counted")
	fs.IntVar(&o.ALS.MaxEntriesPerMessage, "als-max-entries-per-message", 10000, "an access-log message with more entries is skipped and counted")
	fs.StringVar(&s.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&s.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&o.LogEvery, "log-every", config.DefaultLogEvery, "a repeated error is logged at most once per this interval (with a count of those held back)")
	fs.BoolVar(&s.version, "version", false, "print the version and exit")
	fs.Usage = func() {} // --help is answered below; errors by main

	fs.SetOutput(io.Discard) // errors are reported once, by main, in the user's spelling
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(fs, out)
			return nil, err
		}
		return nil, fmt.Errorf("%s (see --help)", userSpelling(err.Error(), args))
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (flags only; see --help)", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		// --version and --help are commands, not settings: a MESHMETRICS_VERSION
		// left in the environment (an image's version, say) must not turn the
		// process into `meshmetrics --version`, nor stop it with a parse error.
		if set[f.Name] || commands[f.Name] {
			return
		}
		if v, ok := lookup(getenv, envName(f.Name)); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", envName(f.Name), v, err))
			}
		}
	})
	// The walkthrough's variables apply when neither flag nor
	// MESHMETRICS_* variable names the files.
	fromEnv := adapter.TLSFilesFromEnv(getenv)
	if o.TLS.Cert == "" {
		o.TLS.Cert = fromEnv.Cert
	}
	if o.TLS.Key == "" {
		o.TLS.Key = fromEnv.Key
	}
	if o.TLS.ClientCA == "" {
		o.TLS.ClientCA = fromEnv.ClientCA
	}
	return s, errors.Join(errs...)
}

// commands are the flags that make the process do something else than run
// the adapter; the environment never sets them.
var commands = map[string]bool{"version": true, "help": true, "h": true}

// userSpelling rewrites the flag package's "-name" in an error message as the
// user typed it ("--name" or "-name").
func userSpelling(msg string, args []string) string {
	for _, a := range args {
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name := strings.TrimPrefix(a, "--")
		if i := strings.IndexByte(name, '='); i >= 0 {
			name = name[:i]
		}
		if name == "" {
			continue
		}
		for _, form := range []string{": -" + name, "flag -" + name + ":"} {
			if strings.HasSuffix(msg, form) || strings.Contains(msg, form) {
				msg = strings.Replace(msg, "-"+name, "--"+name, 1)
				return msg
			}
		}
	}
	return msg
}

func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

func usage(fs *flag.FlagSet, out io.Writer) {
	fmt.Fprintf(out, `%s
A metrics adapter for Istio meshes, with or without Mixer.

With Mixer (Istio 1.1 to 1.7), Mixer calls it over gRPC
(/metric.HandleMetricService/HandleMetric) with the handler's params.
Without Mixer (Istio 1.8 and later, or any Envoy), --config-dir makes it
serve Envoy's Access Log Service and run the handlers, instances and rules of
that directory itself. Either way it aggregates the instances and serves or
pushes them to Prometheus (scrape, remote write), OTLP (an OpenTelemetry
Collector) and Librato/AppOptics. Handler params are documented in
docs/params.md; the process is configured with these flags, each of which
can also be set by the environment variable shown (--version and --help are
commands: the environment never sets them).

"meshmetrics validate" checks a config offline (Mixer CRDs with -f, or a
Mixer-less --config-dir) as the adapter would take it; "meshmetrics validate
--help" says how. SIGHUP re-reads the TLS files, the token files and the
config directory; SIGTERM drains and flushes, then exits.

Flags:
`, versionLine(buildInfo()))
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, n := range names {
		f := fs.Lookup(n)
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		if commands[n] {
			fmt.Fprintf(out, "  --%s\n      %s\n", n, f.Usage)
			continue
		}
		fmt.Fprintf(out, "  --%s (default %s, env %s)\n      %s\n", n, def, envName(n), f.Usage)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, out io.Writer, reload <-chan os.Signal) error {
	s, err := parse(args, getenv, out)
	if err != nil {
		return err
	}
	bi := buildInfo()
	if s.version {
		fmt.Fprintln(out, versionLine(bi))
		return nil
	}
	s.opts.Build = bi
	log, secrets, err := adapter.NewLogger(adapter.LogOptions{Format: s.logFormat, Level: s.logLevel, Output: out})
	if err != nil {
		return err
	}
	s.opts.Log, s.opts.Secrets = log, secrets
	s.opts.Reload = reload
	log.WithFields(logrus.Fields{"version": bi.Version, "commit": bi.Revision, "go": bi.GoVersion}).Info("starting meshmetrics")
	start := time.Now()
	err = adapter.Run(ctx, s.opts)
	log.WithField("uptime", time.Since(start).Round(time.Second).String()).Info("meshmetrics stopped")
	return err
}
