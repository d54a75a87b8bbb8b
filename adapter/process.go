package adapter

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/grpcserver"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
)

// What a process (cmd/meshmetrics) needs besides Options to run an adapter:
// the server's TLS files and the logger. The implementations are internal.

// TLSFiles are the server's certificate, key and client CA (PEM files).
type TLSFiles = grpcserver.TLSFiles

// The environment variables of Mixer's out-of-process adapter walkthrough
// that name the TLS files when no flag does.
const (
	EnvCredential  = grpcserver.EnvCredential
	EnvPrivateKey  = grpcserver.EnvPrivateKey
	EnvCertificate = grpcserver.EnvCertificate
)

// TLSFilesFromEnv reads the walkthrough's variables.
func TLSFilesFromEnv(getenv func(string) string) TLSFiles { return grpcserver.TLSFilesFromEnv(getenv) }

// LogOptions configure NewLogger.
type LogOptions = logging.Options

// Secrets are values that logs never show (tokens, passwords).
type Secrets = logging.Secrets

// NewLogger builds a logger whose output never contains a value registered
// with the returned Secrets.
func NewLogger(o LogOptions) (*logrus.Logger, *Secrets, error) { return logging.New(o) }

// BuildInfo describes the running binary; /metrics exports it as
// meshmetrics_build_info{version,revision,goversion} 1.
type BuildInfo struct {
	Version   string
	Revision  string
	Time      string
	GoVersion string
}

func registerBuildInfo(reg prometheus.Registerer, b BuildInfo) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshmetrics_build_info",
		Help: "The running meshmetrics: version, VCS revision and Go version (value 1).",
	}, []string{"version", "revision", "goversion"})
	if b.GoVersion == "" {
		b.GoVersion = runtime.Version()
	}
	g.WithLabelValues(orUnknown(b.Version), orUnknown(b.Revision), b.GoVersion).Set(1)
	reg.MustRegister(g)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
