package sinks

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/config"
)

// Env is what the adapter gives every sink it builds.
type Env struct {
	Log *logrus.Logger
	// Limiter is for errors that can repeat at the rate of requests or pushes.
	Limiter *logging.Limiter
	// Secrets: register every token or password a sink loads, so that logs
	// never show it.
	Secrets *logging.Secrets
	Metrics *telemetry.Metrics
	// Replica names this adapter process (--replica, default the host name),
	// for the replica label or tag that keeps replicas' series apart.
	Replica string
	// MaxSeries caps the series of one sink (--max-series).
	MaxSeries int
	// Now is the clock; tests replace it.
	Now func() time.Time
	// Tick is the granularity of sinks' timers (expiry checks, period
	// boundaries); tests shorten it. Default one second.
	Tick time.Duration
	// Spool, when set (--spool-dir), keeps push sinks' send queues on disk
	// (export.Settings.Spool).
	Spool *export.Spool
	// KeySalt keys the digests in sink keys (KeyDigest): random per
	// process, or the spool's (kept on disk) so that a destination keeps its
	// key, and its spool directory, across restarts.
	KeySalt []byte
}

// FallbackReplica names the replica when neither --replica nor the host
// name gives one.
const FallbackReplica = "meshmetrics"

// WithDefaults fills what a test or a partial wiring leaves out, so that a
// sink never has to check for nil: a discarding logger, its own secrets,
// limiter and metrics registry, the host name as replica, the wall clock,
// a one-second tick and a random key salt (still secret).
func (e Env) WithDefaults() Env {
	if e.Log == nil {
		e.Log = logrus.New()
		e.Log.SetOutput(io.Discard)
	}
	if e.Secrets == nil {
		e.Secrets = &logging.Secrets{}
	}
	if e.Limiter == nil {
		e.Limiter = logging.NewLimiter(e.Log, config.DefaultLogEvery)
	}
	if e.Metrics == nil {
		e.Metrics = telemetry.New(prometheus.NewRegistry(), func() int { return 0 }, noQueues{})
	}
	if e.Replica == "" {
		e.Replica, _ = os.Hostname()
		if e.Replica == "" {
			e.Replica = FallbackReplica
		}
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.Tick <= 0 {
		e.Tick = time.Second
	}
	if e.KeySalt == nil {
		e.KeySalt = make([]byte, 32)
		_, _ = rand.Read(e.KeySalt)
	}
	return e
}

type noQueues struct{}

func (noQueues) Stats() []telemetry.QueueStat { return nil }

// Telemetry is where a push sink's export.Sender reports.
func (e Env) Telemetry() export.Telemetry {
	return export.Telemetry{Metrics: e.Metrics, Limiter: e.Limiter, Log: e.Log, Secrets: e.Secrets}
}

// KeyDigest is the short digest that tells destinations apart in a sink key.
// Keys show up in logs and metric labels, and the data may hold secrets (a
// token, a password): an HMAC under the salt reveals nothing about them.
func KeyDigest(salt, data []byte) string {
	m := hmac.New(sha256.New, salt)
	m.Write(data)
	return hex.EncodeToString(m.Sum(nil)[:6])
}
