// Package dedup remembers the dedup_ids of recent requests, so that a request
// seen again within a TTL (something between Mixer and the adapter retried
// it) is not counted twice.
//
// Mixer's ids are a per-handler counter in decimal, seeded at random, so
// numeric ids are kept as bits in bitmaps of 4096 consecutive ids: a few bits
// per request instead of a string. Other ids go to a two-generation set. Both
// are bounded; past the bound the oldest ids are forgotten first.
package dedup

import (
	"sync"
	"time"
)

const (
	blockShift = 12
	blockIDs   = 1 << blockShift
	blockWords = blockIDs / 64
	// maxBlocks bounds the bitmaps at about 2 MiB; Mixer's sequential ids
	// fill blocks densely, so this holds minutes of traffic at any rate.
	maxBlocks = 4096
	// maxGeneration bounds each generation of the string set.
	maxGeneration = 65536
)

type block struct {
	bits    [blockWords]uint64
	touched int64
}

// Window is the set of ids seen within the TTL. Safe for concurrent use.
type Window struct {
	ttl int64

	mu      sync.Mutex
	blocks  map[uint64]*block
	cur     map[string]struct{}
	prev    map[string]struct{}
	rotated int64
	swept   int64
}

// New makes a Window that forgets ids after ttl (a block of numeric ids is
// forgotten ttl after its last new id).
func New(ttl time.Duration) *Window {
	return &Window{ttl: int64(ttl), blocks: map[uint64]*block{}, cur: map[string]struct{}{}, prev: map[string]struct{}{}}
}

// Insert records id and reports whether it was new. An empty id is always new.
func (w *Window) Insert(id []byte, now time.Time) bool {
	if len(id) == 0 {
		return true
	}
	t := now.UnixNano()
	w.mu.Lock()
	defer w.mu.Unlock()
	if n, ok := parseDecimal(id); ok {
		if fresh, stored := w.insertNumeric(n, t); stored {
			return fresh
		}
	}
	return w.insertString(id, t)
}

// Remove forgets id, so that a request refused before it was recorded can be
// sent again.
func (w *Window) Remove(id []byte) {
	if len(id) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if n, ok := parseDecimal(id); ok {
		if b, ok := w.blocks[n>>blockShift]; ok {
			bit := n & (blockIDs - 1)
			b.bits[bit/64] &^= 1 << (bit % 64)
		}
	}
	delete(w.cur, string(id))
	delete(w.prev, string(id))
}

func (w *Window) insertNumeric(n uint64, t int64) (fresh, stored bool) {
	b, ok := w.blocks[n>>blockShift]
	if !ok {
		if len(w.blocks) >= maxBlocks {
			w.sweep(t)
			if len(w.blocks) >= maxBlocks {
				return false, false
			}
		}
		b = &block{}
		w.blocks[n>>blockShift] = b
	}
	bit := n & (blockIDs - 1)
	word, mask := bit/64, uint64(1)<<(bit%64)
	if b.bits[word]&mask != 0 {
		return false, true
	}
	b.bits[word] |= mask
	b.touched = t
	if t-w.swept > w.ttl {
		w.sweep(t)
	}
	return true, true
}

func (w *Window) sweep(t int64) {
	w.swept = t
	for k, b := range w.blocks {
		if t-b.touched > w.ttl {
			delete(w.blocks, k)
		}
	}
}

func (w *Window) insertString(id []byte, t int64) bool {
	if t-w.rotated > w.ttl || len(w.cur) >= maxGeneration {
		w.prev, w.cur = w.cur, make(map[string]struct{}, len(w.cur))
		w.rotated = t
	}
	if _, ok := w.cur[string(id)]; ok {
		return false
	}
	if _, ok := w.prev[string(id)]; ok {
		return false
	}
	w.cur[string(id)] = struct{}{}
	return true
}

// parseDecimal accepts the canonical decimal form of a uint64 only, so that
// "7" and "007" are never taken for the same id.
func parseDecimal(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 || (b[0] == '0' && len(b) > 1) {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (^uint64(0)-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
