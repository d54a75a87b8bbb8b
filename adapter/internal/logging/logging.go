// Package logging sets up the adapter's logrus logger: text or JSON, a level,
// every known secret value redacted from every line, and a limiter for errors
// that can repeat at the rate of requests.
package logging

import (
	"bytes"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Options configure New.
type Options struct {
	// Format is "text" or "json".
	Format string
	// Level is a logrus level name: debug, info, warn, error.
	Level  string
	Output io.Writer
}

// New builds a logger whose output never contains a value registered with
// the returned Secrets.
func New(o Options) (*logrus.Logger, *Secrets, error) {
	level, err := logrus.ParseLevel(o.Level)
	if err != nil {
		return nil, nil, fmt.Errorf("log level %q: want debug, info, warn or error", o.Level)
	}
	var f logrus.Formatter
	switch o.Format {
	case "", "text":
		f = &logrus.TextFormatter{DisableColors: true, FullTimestamp: true, TimestampFormat: time.RFC3339Nano}
	case "json":
		f = &logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano}
	default:
		return nil, nil, fmt.Errorf("log format %q: want text or json", o.Format)
	}
	secrets := &Secrets{}
	log := logrus.New()
	log.SetLevel(level)
	log.SetFormatter(&redactingFormatter{inner: f, secrets: secrets})
	if o.Output != nil {
		log.SetOutput(o.Output)
	}
	return log, secrets, nil
}

// Redacted replaces a secret in log output.
const Redacted = "[REDACTED]"

// minSecretLen keeps very short values (which could be ordinary words) from
// being registered; real tokens are far longer.
const minSecretLen = 4

// Secrets are values that must never be logged: tokens and passwords read
// from params, files or the environment. Components that load one register
// it here. The zero value is ready to use.
type Secrets struct {
	mu     sync.RWMutex
	values map[string]struct{}
	sorted [][]byte
}

// Add registers a secret value.
func (s *Secrets) Add(secret string) {
	if len(secret) < minSecretLen {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.values == nil {
		s.values = map[string]struct{}{}
	}
	if _, ok := s.values[secret]; ok {
		return
	}
	s.values[secret] = struct{}{}
	s.sorted = s.sorted[:0]
	for v := range s.values {
		s.sorted = append(s.sorted, []byte(v))
	}
	// Longest first, so that a secret containing another is replaced whole.
	sort.Slice(s.sorted, func(i, j int) bool { return len(s.sorted[i]) > len(s.sorted[j]) })
}

// Redact replaces every registered secret in b.
func (s *Secrets) Redact(b []byte) []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, v := range s.sorted {
		if bytes.Contains(b, v) {
			b = bytes.ReplaceAll(b, v, []byte(Redacted))
		}
	}
	return b
}

// RedactString is Redact for strings (error messages, debug output).
func (s *Secrets) RedactString(in string) string { return string(s.Redact([]byte(in))) }

type redactingFormatter struct {
	inner   logrus.Formatter
	secrets *Secrets
}

func (f *redactingFormatter) Format(e *logrus.Entry) ([]byte, error) {
	b, err := f.inner.Format(e)
	if err != nil {
		return nil, err
	}
	return f.secrets.Redact(b), nil
}

// Limiter logs an error that can repeat at the rate of requests at most once
// per key per interval, and says how many it held back in between.
type Limiter struct {
	log   logrus.FieldLogger
	every time.Duration
	now   func() time.Time

	mu    sync.Mutex
	slots map[string]*slot
}

type slot struct {
	last       time.Time
	suppressed int
}

// maxLimiterKeys bounds the limiter's memory when keys are unbounded (for
// example an instance name per key).
const maxLimiterKeys = 4096

// NewLimiter lets one line per key through every interval.
func NewLimiter(log logrus.FieldLogger, every time.Duration) *Limiter {
	return &Limiter{log: log, every: every, now: time.Now, slots: map[string]*slot{}}
}

// Log writes msg at level unless a line with the same key was written less
// than the interval ago.
func (l *Limiter) Log(level logrus.Level, key string, fields logrus.Fields, msg string) {
	now := l.now()
	l.mu.Lock()
	s, ok := l.slots[key]
	if !ok {
		if len(l.slots) >= maxLimiterKeys {
			l.prune(now)
		}
		s = &slot{}
		l.slots[key] = s
	}
	if !s.last.IsZero() && now.Sub(s.last) < l.every {
		s.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := s.suppressed
	s.last, s.suppressed = now, 0
	l.mu.Unlock()

	entry := l.log.WithFields(fields)
	if suppressed > 0 {
		entry = entry.WithField("suppressed", suppressed)
	}
	entry.Log(level, msg)
}

func (l *Limiter) prune(now time.Time) {
	for k, s := range l.slots {
		if now.Sub(s.last) >= l.every {
			delete(l.slots, k)
		}
	}
	if len(l.slots) >= maxLimiterKeys {
		clear(l.slots)
	}
}
