package export

import (
	"context"
	"errors"
	"fmt"

	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// spooled is the storage of a queue over its destination's spool
// directory, which the queue of a sink closing may share with its
// successor's for a while.
type spooled[R Request] struct {
	sd     *spoolDir
	att    *attachment
	codec  Codec[R]
	onDrop dropFunc
}

// newSpooled attaches to the directory of key, whose earlier requests are
// then sent first.
func newSpooled[R Request](sp *Spool, key string, workers int, codec Codec[R], onDrop dropFunc) (*spooled[R], error) {
	sd, att, err := sp.attach(key, workers, onDrop)
	if err != nil {
		return nil, fmt.Errorf("spool for %s: %w", key, err)
	}
	return &spooled[R]{sd: sd, att: att, codec: codec, onDrop: onDrop}, nil
}

// put writes r to disk before returning.
func (s *spooled[R]) put(r R) {
	s.sd.put(s.att, s.codec.Encode(r), r.Units(), r.Instances())
}

func (s *spooled[R]) take(ctx context.Context) (lease[R], bool) {
	for {
		e, ectx, more := s.sd.take(s.att, ctx)
		if e != nil {
			if more {
				s.sd.signal()
			}
			return &spoolLease[R]{s: s, e: e, ctx: ectx}, true
		}
		select {
		case <-s.att.wake:
		case <-ctx.Done():
			return nil, false
		}
	}
}

func (s *spooled[R]) units() int { return s.sd.pendingUnits() }

// drain waits for the requests queued before the call: another sink of the
// same destination may keep adding.
func (s *spooled[R]) drain(ctx context.Context) error {
	return s.sd.waitUpTo(ctx, s.sd.lastSeq())
}

// close detaches from the directory. What is on disk stays for the next
// sink of the destination, which may be in the next run; requests only in
// memory (their write failed) are lost.
func (s *spooled[R]) close(drainErr error) error {
	lost, left := s.sd.detach(s.att)
	for _, e := range lost {
		s.onDrop(telemetry.DropShutdown, e.units, e.instances,
			errors.New("not sent before the shutdown timeout, and not on disk (the spool write had failed)"))
	}
	if drainErr != nil && left.Requests > 0 && !left.Attached {
		return fmt.Errorf("%d requests (%d instances) not sent, kept in the spool for the next start: %w", left.Requests, left.Instances, drainErr)
	}
	return drainErr
}

type spoolLease[R Request] struct {
	s   *spooled[R]
	e   *entry
	ctx context.Context
}

// open reads and checks the request. Every outcome is counted before the
// request leaves the spool's books, so that a Drain that returns has seen
// the counts.
func (l *spoolLease[R]) open(context.Context) (R, context.Context, bool) {
	payload, err := l.s.sd.read(l.e)
	var r R
	if err == nil {
		r, err = l.s.codec.Decode(payload, l.e.units, l.e.instances)
		if err != nil {
			err = fmt.Errorf("%w: %w", errCorrupt, err)
		}
	}
	if err == nil {
		return r, l.ctx, true
	}
	if l.s.sd.isEvicted(l.e) { // its file went with the eviction
		l.s.onDrop(telemetry.DropSpoolFull, l.e.units, l.e.instances, errEvicted)
	} else {
		l.s.sd.noteCorrupt()
		l.s.onDrop(telemetry.DropSpoolCorrupt, l.e.units, l.e.instances, err)
	}
	l.s.sd.finish(l.e)
	return r, nil, false
}

func (l *spoolLease[R]) replayed() bool { return l.e.replayed }

// done: delivered, even if the full spool had evicted it meanwhile.
func (l *spoolLease[R]) done() { l.s.sd.finish(l.e) }

func (l *spoolLease[R]) drop(reason string, err error) {
	l.s.onDrop(reason, l.e.units, l.e.instances, err)
	l.s.sd.finish(l.e)
}

// requeue puts the request back first in line, unless the full spool
// evicted it meanwhile.
func (l *spoolLease[R]) requeue(err error) requeueResult {
	if l.s.sd.release(l.e) {
		l.s.onDrop(telemetry.DropSpoolFull, l.e.units, l.e.instances, fmt.Errorf("%w while being retried: %w", errEvicted, err))
		l.s.sd.finish(l.e)
		return evicted
	}
	return kept
}
