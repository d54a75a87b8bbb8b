package export

import (
	"errors"
	"os"
	"path/filepath"

	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// Eviction: keeping the spool within its cap, oldest requests first, of
// any destination.

// errEvicted is what reading a request evicted meanwhile gives.
var errEvicted = errors.New("evicted from the full spool")

type victim struct {
	path             string
	drop             func(string, int, int, error)
	units, instances int
}

// evictLocked drops the oldest requests, of any destination, until the
// spool fits its cap; keep (the request being added) is never chosen. An
// evicted request being sent is cancelled, and counted when its send ends,
// since it may still get through.
func (sp *Spool) evictLocked(keep *entry) []victim {
	var out []victim
	for sp.total > sp.max {
		var oldest *entry
		var from *spoolDir
		better := func(e *entry, sd *spoolDir) {
			if e == keep || e.evicted {
				return
			}
			if oldest == nil || e.written < oldest.written || (e.written == oldest.written && e.seq < oldest.seq) {
				oldest, from = e, sd
			}
		}
		for _, sd := range sp.dirs {
			for _, e := range sd.pending[sd.head:] {
				if e != keep {
					better(e, sd)
					break // the first one is the oldest of this directory
				}
			}
			for e := range sd.inflight {
				better(e, sd)
			}
		}
		if oldest == nil {
			break
		}
		sp.total -= oldest.size
		from.sub(oldest)
		v := victim{units: oldest.units, instances: oldest.instances}
		if oldest.file != "" {
			v.path = filepath.Join(from.path, oldest.file)
		}
		if oldest.inflight {
			oldest.evicted = true
			oldest.cancel()
		} else {
			// The oldest pending entry is at the head, unless it is
			// keep's neighbour: find it.
			for i := from.head; i < len(from.pending); i++ {
				if from.pending[i] == oldest {
					if i == from.head {
						from.popLocked()
					} else {
						from.pending = append(from.pending[:i], from.pending[i+1:]...)
					}
					break
				}
			}
			v.drop = from.dropFnLocked()
		}
		out = append(out, v)
		if len(from.attached) == 0 && from.requests == 0 && len(from.inflight) == 0 {
			// An orphan emptied: forget it. Under the lock, so that an
			// attach of the same destination cannot interleave.
			if v.path != "" {
				_ = os.Remove(v.path)
			}
			_ = os.RemoveAll(from.path)
			delete(sp.dirs, from.name)
		}
	}
	if len(out) > 0 {
		sp.cond.Broadcast()
	}
	return out
}

func (sp *Spool) removeFiles(vs []victim) {
	for _, v := range vs {
		if v.path != "" {
			_ = os.Remove(v.path)
		}
	}
}

func (sp *Spool) reportVictims(vs []victim) {
	for _, v := range vs {
		if v.drop != nil {
			v.drop(telemetry.DropSpoolFull, v.units, v.instances, errors.New("spool full: oldest request dropped"))
		}
	}
}
