package sinks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
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
