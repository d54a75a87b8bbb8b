package librato

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/series"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/config"
)

// Sink aggregates samples per series and period and pushes the closed
// periods to Librato or AppOptics.
//
// Time: periods are aligned to multiples of the period since the Unix epoch
// on env.Now. A period closes on the first tick (env.Tick) at or after its
// end, or as soon as a batch received after its end is consumed, whichever
// comes first; a sample belongs to the period open when it is consumed.
// Measurements carry the period's start as time.
type Sink struct {
	name   string
	cfg    settings
	env    sinks.Env
	opts   Options
	tok    *tokenSource
	reg    *series.Registry[*state]
	client *http.Client
	queue  *export.Sender[*request]
	update func(f *series.Family[*state], s *series.Series[*state], v float64)

	// flushMu serialises closes, so that requests are queued in time order
	// (legacy counters must arrive in order) and totals stays consistent.
	flushMu sync.Mutex
	totals  map[string]*running // legacy counters by identity; under flushMu
	// times are the destination's series times (timeOf): a series' times
	// strictly increase, across the destination's sinks.
	times *destTimes

	// mu guards the period state and every registry call: OnRemove runs
	// inside them and appends to orphans.
	mu          sync.Mutex
	periodStart int64 // Unix seconds
	stamp       int64 // time of the open segment (periodStart unless flushed early)
	seq         uint64
	orphans     []point
	closed      bool
	// ended are the periods closed but not yet encoded and queued: Consume
	// sets them aside, the sink's goroutine ships them (period.go).
	ended []endedPeriod
	// shipNow wakes the sink's goroutine to ship ended periods.
	shipNow chan struct{}

	pauseUntil atomic.Int64 // Unix nanoseconds: an exhausted rate limit resets
	stop       chan struct{}
	stopped    chan struct{}
	closeOnce  sync.Once
	closeErr   error
}

func newSink(name string, l *config.LibratoParams, env sinks.Env, opts Options) (*Sink, error) {
	tok, err := newTokenSource(l, env.Secrets, env.Limiter)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	cfg := settingsOf(l, env.Replica)
	s := &Sink{
		name:    name,
		cfg:     cfg,
		env:     env,
		opts:    opts,
		tok:     tok,
		totals:  map[string]*running{},
		shipNow: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	s.reg = series.New(series.Options[*state]{
		MaxSeries: env.MaxSeries,
		NewState:  func(*series.Family[*state]) *state { return &state{} },
		OnRemove:  s.onRemove,
	})
	s.update = func(_ *series.Family[*state], ser *series.Series[*state], v float64) {
		ser.State.add(v, s.seq) // under mu
	}
	s.client = export.NewHTTPClient(nil)
	if opts.Transport != nil {
		s.client.Transport = opts.Transport
	}
	// Tagged measurements are independent, so two requests may be in flight
	// to catch up after an outage; legacy counters are cumulative and must
	// arrive in order.
	workers := 2
	if cfg.legacy {
		workers = 1
	}
	s.queue, err = export.New(export.Settings{
		Sink:      name,
		Capacity:  cfg.queueSize,
		Workers:   workers,
		Spool:     env.Spool,
		Timeout:   cfg.requestTimeout,
		Retry:     export.RetrySettings{MinBackoff: opts.MinBackoff, MaxBackoff: opts.MaxBackoff, MaxElapsed: cfg.maxElapsed},
		Telemetry: env.Telemetry(),
	}, s.push, spoolCodec)
	if err != nil {
		return nil, err
	}
	env.Metrics.InitDropped(name, DropValueOutOfRange)
	now := env.Now().Unix()
	s.periodStart = floorTo(now, cfg.period)
	// The first period starts now, not at its start: the previous run may
	// have sent values for this period, each for a time up to its close,
	// and Librato keeps one value per series and time. Within the process,
	// the times the destination's sinks sent are known (timeOf): after
	// them.
	var after int64
	s.times, after = opts.times.open(name)
	s.stamp = max(now, after)
	go s.run()
	env.Log.WithFields(logrus.Fields{"sink": name, "period": time.Duration(cfg.period) * time.Second}).Info("librato sink started")
	return s, nil
}

func floorTo(t, period int64) int64 {
	r := t % period
	if r < 0 {
		r += period
	}
	return t - r
}

// Name implements sinks.Sink; it is the Factory's key, which holds no secret.
func (s *Sink) Name() string { return s.name }

// Reload implements sinks.Reloader: the token file is re-read now.
func (s *Sink) Reload() error { return s.tok.reload() }

// Bind implements sinks.Sink. The registry is keyed by the Librato name, so
// two definitions that map to one name supersede each other instead of
// mixing in one Librato metric.
func (s *Sink) Bind(m *sinks.Metric) (sinks.Binding, error) {
	switch m.Kind {
	case sinks.Gauge, sinks.Counter, sinks.Distribution:
	default:
		return nil, fmt.Errorf("librato: metric %q has unsupported kind %s", m.Name, m.Kind)
	}
	name, r := metricName(m)
	if r.Dropped() {
		return nil, fmt.Errorf("librato: metric %q has an empty name", m.Name)
	}
	s.countReason(r.Has(ReasonReplaced), SanitizedNameReplaced)
	s.countReason(r.Has(ReasonTruncated), SanitizedNameTruncated)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reg.Bind(name, m, sinks.DurationScale(m.DurationUnit, config.DurationUnit_MILLISECONDS)), nil
}

// Unbind implements sinks.Sink. What the metric's series gathered in the
// open period is still sent, at the period's close.
func (s *Sink) Unbind(b sinks.Binding) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reg.Unbind(b)
}

// onRemove keeps the open period of a series leaving the registry
// (unbound, superseded, expired): those instances were accepted. Runs under
// mu, inside a registry call.
func (s *Sink) onRemove(f *series.Family[*state], ser *series.Series[*state], _ series.RemoveReason) {
	if ser.State.n > 0 {
		s.orphans = append(s.orphans, s.takeLocked(f, ser))
	}
}

// Consume implements sinks.Sink. It only aggregates: a batch received
// after the open period's end first sets that period aside (in memory), and
// the sink's goroutine encodes and queues it, so that Consume never waits
// for a spool's fsync.
func (s *Sink) Consume(b *sinks.Batch) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.env.Metrics.Dropped(s.name, telemetry.DropShutdown, b.Len())
		return
	}
	ended := s.cutLocked(b.Time, false)
	s.seq++
	d := s.reg.Apply(b, s.update)
	s.mu.Unlock()
	if ended {
		select {
		case s.shipNow <- struct{}{}:
		default:
		}
	}
	series.Report(s.env, s.name, d)
}

// Flush implements sinks.Sink: the open period's aggregate so far is sent
// now, and Flush waits until the send queue is empty or ctx ends (what is
// still queued then stays queued).
func (s *Sink) Flush(ctx context.Context) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return sinks.ErrClosed
	}
	s.rotate(s.env.Now(), true)
	return s.queue.Drain(ctx)
}

// Close implements sinks.Sink: every period, the open one included, is
// queued, and the queue is drained until ctx ends; what is still unsent
// then is dropped and counted (shutdown_timeout).
func (s *Sink) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.stopped
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.rotate(s.env.Now(), true)
		s.times.closed()
		if err := s.queue.Close(ctx); err != nil {
			s.closeErr = fmt.Errorf("librato sink %s: not everything was sent before the shutdown timeout: %w", s.name, err)
		}
		s.env.Metrics.SinkSeries.DeleteLabelValues(s.name)
		// A config change builds a new sink: don't leave this one's
		// connections open until the server times them out.
		s.client.CloseIdleConnections()
	})
	return s.closeErr
}
