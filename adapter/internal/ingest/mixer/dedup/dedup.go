// Package dedup keeps a bounded window of recent dedup_ids: it tells which
// ids come back, and, when deduplication is on, which calls are re-sends of
// a call already counted.
//
// A real Mixer reuses ids: its per-handler counter is read and advanced in
// two steps (istio 1.7.8, mixer/pkg/protobuf/yaml/dynamic/handler.go,
// handleRemote), so calls dispatched at the same moment share an id, and
// Mixer never re-sends a call. A repeated id from Mixer is therefore never
// a retry, and dropping it loses real data; deduplication is off by default
// and the window only counts reused ids, so that the race is visible.
//
// With deduplication on (for clients that really retry with a stable id), a
// call is a duplicate only when its id and its content both match a call
// seen within the window: two different calls that share an id both count.
//
// Ids are kept as keyed 64-bit hashes (scoped by the handler config, since
// each handler has its own sequence), whatever their length or form, in two
// generations rotated by time and by count: memory is bounded by the count
// cap, never by what callers send.
package dedup

import (
	"hash/maphash"
	"sync"
	"time"
)

// DefaultMaxIDs caps the ids of one generation. Two generations of this
// many ids (and as many id/content pairs when deduplicating) take about
// 10 MB at most; at a higher rate than DefaultMaxIDs per window the window
// gets shorter instead of larger.
const DefaultMaxIDs = 1 << 17

// Options configure a Window.
type Options struct {
	// Window is how long an id is remembered (at least one window, at most
	// two: generations rotate every Window).
	Window time.Duration
	// Deduplicate drops a call whose id and content were seen within the
	// window. Off, calls are never dropped; reused ids are only counted.
	Deduplicate bool
	// MaxIDs caps each generation (default DefaultMaxIDs).
	MaxIDs int
}

// Verdict is what the window says of one call.
type Verdict struct {
	// Reused: the id was seen within the window (with any content).
	Reused bool
	// Duplicate: deduplication is on and the id and content were both seen
	// within the window; the call must not be counted again.
	Duplicate bool
}

type pair struct{ id, content uint64 }

// Window is the set of recent ids. Safe for concurrent use.
type Window struct {
	window int64
	dedup  bool
	max    int
	seed   maphash.Seed

	mu        sync.Mutex
	ids       map[uint64]struct{}
	prevIDs   map[uint64]struct{}
	calls     map[pair]struct{}
	prevCalls map[pair]struct{}
	rotated   int64
}

// New makes a Window.
func New(o Options) *Window {
	if o.MaxIDs <= 0 {
		o.MaxIDs = DefaultMaxIDs
	}
	w := &Window{window: int64(o.Window), dedup: o.Deduplicate, max: o.MaxIDs, seed: maphash.MakeSeed(),
		ids: map[uint64]struct{}{}, prevIDs: map[uint64]struct{}{}}
	if w.dedup {
		w.calls, w.prevCalls = map[pair]struct{}{}, map[pair]struct{}{}
	}
	return w
}

// Deduplicates reports whether duplicates are dropped; only then does a
// caller need to hash the content.
func (w *Window) Deduplicates() bool { return w.dedup }

// Seed keys content hashes (wire.Request.ContentHash), so that callers
// cannot craft collisions.
func (w *Window) Seed() maphash.Seed { return w.seed }

// Key hashes an id within a scope (the handler config's digest).
func (w *Window) Key(scope, id []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(w.seed)
	_, _ = h.Write(scope)
	_ = h.WriteByte(0)
	_, _ = h.Write(id)
	return h.Sum64()
}

// Observe records a call whose id has key (Key) and whose content hashes to
// content (ignored unless Deduplicates). Callers skip calls without an id:
// those are never reused.
func (w *Window) Observe(key, content uint64, now time.Time) Verdict {
	t := now.UnixNano()
	w.mu.Lock()
	defer w.mu.Unlock()
	if t-w.rotated > w.window || len(w.ids) >= w.max || len(w.calls) >= w.max {
		w.rotate(t)
	}
	var v Verdict
	_, v.Reused = w.ids[key]
	if !v.Reused {
		_, v.Reused = w.prevIDs[key]
	}
	w.ids[key] = struct{}{}
	if w.dedup {
		p := pair{key, content}
		_, v.Duplicate = w.calls[p]
		if !v.Duplicate {
			_, v.Duplicate = w.prevCalls[p]
		}
		w.calls[p] = struct{}{}
	}
	return v
}

// Forget removes a call recorded by Observe that was then refused before
// anything was counted, so that a corrected re-send counts. Its id stays
// seen.
func (w *Window) Forget(key, content uint64) {
	if !w.dedup {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.calls, pair{key, content})
	delete(w.prevCalls, pair{key, content})
}

func (w *Window) rotate(t int64) {
	w.rotated = t
	w.prevIDs, w.ids = w.ids, make(map[uint64]struct{}, min(len(w.ids), w.max))
	if w.dedup {
		w.prevCalls, w.calls = w.calls, make(map[pair]struct{}, min(len(w.calls), w.max))
	}
}

// Len is the number of ids remembered (both generations).
func (w *Window) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ids) + len(w.prevIDs)
}
