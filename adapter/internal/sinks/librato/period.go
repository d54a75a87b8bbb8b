package librato

import (
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/series"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
)

// Periods: closing them on the tick or when a later batch arrives, taking
// each series' open segment, and turning the points into queued requests.
// Closing only sets the points aside (cutLocked, from Consume too);
// encoding and queueing them (ship) happen on the sink's goroutine, or on
// Flush's and Close's callers.

// running is a legacy counter's cumulative value.
type running struct {
	total float64
	last  int64 // period start it was last sent for
}

// endedPeriod is the points of a period, or of a flushed part of one, not
// yet queued.
type endedPeriod struct {
	points []point
	stamp  int64
}

// legacyCounterHorizon: a legacy counter idle this long is forgotten, and
// starts a new run (from zero) if it comes back.
const legacyCounterHorizon = 24 * time.Hour

// run closes periods on the tick, ships those Consume closed, and expires
// idle series.
func (s *Sink) run() {
	defer close(s.stopped)
	t := time.NewTicker(s.env.Tick)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.shipNow:
			s.ship()
		case <-t.C:
			now := s.env.Now()
			s.rotate(now, false)
			s.mu.Lock()
			s.reg.Expire(now)
			s.mu.Unlock()
			s.env.Metrics.SinkSeries.WithLabelValues(s.name).Set(float64(s.reg.Len()))
		}
	}
}

// rotate closes the open period if now is past its end, or, with partial,
// the open period's aggregate so far, and queues what is closed.
func (s *Sink) rotate(now time.Time, partial bool) {
	s.mu.Lock()
	s.cutLocked(now, partial)
	s.mu.Unlock()
	s.ship()
}

// cutLocked sets aside the open period if now is past its end, or, with
// partial, its aggregate so far, and reports whether it did. After a
// partial cut the rest of the period is stamped one second or more later
// (at most its last second), so that Librato never gets two values of a
// series for one time, which would overwrite each other. Under mu.
func (s *Sink) cutLocked(now time.Time, partial bool) bool {
	sec := now.Unix()
	end := s.periodStart + s.cfg.period
	due := sec >= end
	if !due && !partial {
		return false
	}
	stamp := s.stamp
	points := s.snapshotLocked()
	switch {
	case due:
		s.periodStart = floorTo(sec, s.cfg.period)
		s.stamp = s.periodStart
	case len(points) > 0: // an empty flush sent nothing that a later time must avoid
		s.stamp = min(max(sec, s.stamp+1), end-1)
	}
	s.ended = append(s.ended, endedPeriod{points: points, stamp: stamp})
	return true
}

// ship encodes and queues the periods set aside, in order: flushMu keeps
// two callers from interleaving (legacy counters must arrive in order).
func (s *Sink) ship() {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	ended := s.ended
	s.ended = nil
	s.mu.Unlock()
	for _, e := range ended {
		s.enqueue(e.points, e.stamp)
	}
}

// snapshotLocked takes the open segment of every series that has data, and
// the orphans, resetting them.
func (s *Sink) snapshotLocked() []point {
	points := s.orphans
	s.orphans = nil
	s.reg.Each(func(f *series.Family[*state], ser *series.Series[*state]) {
		if ser.State.n > 0 {
			points = append(points, s.takeLocked(f, ser))
		}
	})
	return points
}

func (s *Sink) takeLocked(f *series.Family[*state], ser *series.Series[*state]) point {
	st := ser.State
	if st.id == nil {
		st.id = s.identify(f.Metric.Kind, f.Name, f.Metric, ser.Labels)
	}
	p := point{kind: f.Metric.Kind, id: st.id, acc: st.acc}
	st.acc = acc{}
	return p
}

// enqueue merges, encodes and queues the points of one close. Under flushMu.
func (s *Sink) enqueue(points []point, stamp int64) {
	points = merge(points)
	s.timeOf(points, stamp)
	if s.cfg.legacy {
		s.accumulate(points, stamp)
	}
	enc := encoder{
		legacy:   s.cfg.legacy,
		maxUnits: s.cfg.maxUnits,
		maxBytes: s.cfg.maxBytes,
		gzip:     s.opts.Gzip,
		time:     stamp,
		period:   s.cfg.period,
		source:   s.cfg.source,
		drop: func(reason string, instances int) {
			s.env.Metrics.Dropped(s.name, reason, instances)
			s.env.Limiter.Log(logrus.WarnLevel, s.name+"|"+reason, logrus.Fields{"sink": s.name, "instances": instances},
				"a measurement has a value out of Librato's range (magnitude above 1e126) and is dropped")
		},
	}
	for _, r := range enc.encode(points) {
		s.queue.Put(r)
	}
}

// timeOf gives each point its time: the close's stamp, or, for a series
// already sent at that time or later, one second after its latest value.
// Librato keeps one value per series and time, so two values of one series
// for one time would lose one of them. That happens when partial closes
// (Flush, Close) outnumber the seconds left in a period (with a 1 s period,
// a Flush and the Close of the same second), and when a config change
// closes a destination's sink while the next one already sends (the times
// are the destination's, shared by its sinks: destTimes). The remainder of
// a series is then stamped a second later (in the next period if need be,
// whose own values move on the same way), never merged into a value
// already sent: a request sent earlier could still arrive later (two
// workers, retries) and overwrite a merged value. Under flushMu.
func (s *Sink) timeOf(points []point, stamp int64) {
	d := s.times
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range points {
		p := &points[i]
		t := stamp
		if last, ok := d.sentAt[p.id.key]; ok && last >= t {
			t = last + 1
		}
		p.time = t
		d.sentAt[p.id.key] = t
		d.max = max(d.max, t)
	}
	// A sink's stamps only grow: while it is the destination's only one, a
	// series last sent before this stamp needs no memory.
	if d.sinks == 1 {
		for k, last := range d.sentAt {
			if last < stamp {
				delete(d.sentAt, k)
			}
		}
	}
}

// sentTimes holds, by destination, the times its open sinks in this
// process sent each series for, and, once none is open, the latest time
// any value was sent for. Safe for concurrent use.
type sentTimes struct {
	mu    sync.Mutex
	dests map[string]*destTimes
	last  map[string]int64
}

func newSentTimes() *sentTimes {
	return &sentTimes{dests: map[string]*destTimes{}, last: map[string]int64{}}
}

// destTimes is one destination's: the latest time of each series sent at
// or after the stamps still in use, and how many sinks of the destination
// are open (a closing one and its successor overlap).
type destTimes struct {
	key    string
	owner  *sentTimes
	mu     sync.Mutex
	sentAt map[string]int64 // by identity
	sinks  int
	max    int64 // the latest time sent
}

// open returns key's times, counting one more sink of it, and the first
// time the sink may use: after the latest value sent once no sink of the
// destination was open.
func (t *sentTimes) open(key string) (*destTimes, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.dests[key]
	if d == nil {
		d = &destTimes{key: key, owner: t, sentAt: map[string]int64{}, max: t.last[key]}
		t.dests[key] = d
	}
	d.mu.Lock()
	d.sinks++
	after := d.max + 1
	d.mu.Unlock()
	return d, after
}

// closed counts a sink of the destination closed: with none left, only
// the latest time sent is kept.
func (d *destTimes) closed() {
	t := d.owner
	t.mu.Lock()
	defer t.mu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sinks--
	if d.sinks == 0 {
		t.last[d.key] = d.max
		delete(t.dests, d.key)
	}
}

// accumulate advances the cumulative value of each legacy counter by the
// period's sum and forgets counters idle beyond the horizon. A dropped
// request thus loses no increment for good: the next value carries it.
func (s *Sink) accumulate(points []point, stamp int64) {
	for i := range points {
		p := &points[i]
		if p.kind != sinks.Counter {
			continue
		}
		r := s.totals[p.id.key]
		if r == nil {
			r = &running{}
			s.totals[p.id.key] = r
		}
		r.total += p.acc.sum
		r.last = stamp
		p.total = r.total
	}
	horizon := stamp - int64(legacyCounterHorizon/time.Second)
	for k, r := range s.totals {
		if r.last < horizon {
			delete(s.totals, k)
		}
	}
}
