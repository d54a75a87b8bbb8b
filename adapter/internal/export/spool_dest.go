package export

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// One destination's directory: its requests in sending order, handed to
// the workers of the queue attached to it.

// spoolDir is one destination's directory. Its state is guarded by
// Spool.mu: eviction looks at every destination at once.
type spoolDir struct {
	sp   *Spool
	name string
	path string
	sink string

	dirf     *os.File // open while attached, to fsync new entries
	nextSeq  uint64
	pending  []*entry // by seq, from head
	head     int
	inflight map[*entry]struct{}
	// attached are the queues using the directory, oldest first. Only the
	// newest takes requests, and no more at once than its workers, so that
	// order holds when a sink follows another of the same destination.
	attached []*attachment

	requests, instances, units int
	bytes                      int64
}

type attachment struct {
	onDrop  func(reason string, units, instances int, err error)
	workers int
	wake    chan struct{}
}

type entry struct {
	seq              uint64
	written          int64 // Unix nanoseconds: orders entries of all destinations
	size             int64
	units, instances int
	file             string // base name; "" when only in memory
	mem              []byte // the payload when it could not be written
	replayed         bool   // from an earlier run
	inflight         bool
	evicted          bool
	cancel           context.CancelFunc
}

// signal wakes a worker of the queue that takes requests (the newest).
func (sd *spoolDir) signal() {
	sd.sp.mu.Lock()
	defer sd.sp.mu.Unlock()
	sd.signalLocked()
}

func (sd *spoolDir) signalLocked() {
	if n := len(sd.attached); n > 0 {
		select {
		case sd.attached[n-1].wake <- struct{}{}:
		default:
		}
	}
}

func (sd *spoolDir) add(e *entry) {
	sd.requests++
	sd.instances += e.instances
	sd.units += e.units
	sd.bytes += e.size
}

func (sd *spoolDir) sub(e *entry) {
	sd.requests--
	sd.instances -= e.instances
	sd.units -= e.units
	sd.bytes -= e.size
}

// insertLocked puts e among the pending entries in seq order. New entries
// go last and returned ones first, so the search is short.
func (sd *spoolDir) insertLocked(e *entry) {
	p := sd.pending[sd.head:]
	i := sort.Search(len(p), func(i int) bool { return p[i].seq > e.seq })
	if i == 0 && sd.head > 0 {
		sd.head--
		sd.pending[sd.head] = e
		return
	}
	i += sd.head
	sd.pending = append(sd.pending, nil)
	copy(sd.pending[i+1:], sd.pending[i:])
	sd.pending[i] = e
}

func (sd *spoolDir) popLocked() *entry {
	e := sd.pending[sd.head]
	sd.pending[sd.head] = nil
	sd.head++
	if sd.head == len(sd.pending) {
		sd.pending, sd.head = sd.pending[:0], 0
	} else if sd.head > 1024 && sd.head > len(sd.pending)/2 {
		n := copy(sd.pending, sd.pending[sd.head:])
		clear(sd.pending[n:])
		sd.pending, sd.head = sd.pending[:n], 0
	}
	return e
}

func (sd *spoolDir) dropFnLocked() func(string, int, int, error) {
	if n := len(sd.attached); n > 0 {
		return sd.attached[n-1].onDrop
	}
	sink := sd.sink
	return func(reason string, units, instances int, err error) {
		sd.sp.opts.OnDrop(sink, reason, units, instances, err)
	}
}

// put writes a request and indexes it, evicting the oldest requests when
// the spool is over its cap. A request larger than the whole spool is
// dropped itself. A request that cannot be written is kept in memory.
func (sd *spoolDir) put(a *attachment, payload []byte, units, instances int) {
	sp := sd.sp
	size := int64(headerSize + len(payload))
	if size > sp.max {
		a.onDrop(telemetry.DropSpoolFull, units, instances, fmt.Errorf("request of %d bytes is larger than the spool (%d)", size, sp.max))
		return
	}
	sp.mu.Lock()
	seq := sd.nextSeq
	sd.nextSeq++
	dirf := sd.dirf
	sp.mu.Unlock()

	e := &entry{seq: seq, written: time.Now().UnixNano(), size: size, units: units, instances: instances,
		file: fmt.Sprintf("%016x%s", seq, requestSuffix)}
	var werr error
	if dirf == nil {
		werr = errors.New("spool directory is closed")
	} else {
		werr = writeSynced(filepath.Join(sd.path, e.file), encodeEntry(units, instances, e.written, payload), dirf, false)
	}
	if werr != nil {
		e.file, e.mem = "", payload
	}
	sp.mu.Lock()
	if werr != nil {
		sp.writeErrors[sd.sink]++
	}
	sd.insertLocked(e)
	sd.add(e)
	sp.total += size
	victims := sp.evictLocked(e)
	sp.mu.Unlock()
	if werr != nil {
		sp.opts.OnWriteError(sd.sink, werr)
	}
	sp.removeFiles(victims)
	sp.reportVictims(victims)
	sd.signal()
}

// take hands the oldest pending request to a worker of a, with a context
// that eviction cancels; nil when there is none, parent is done, a is not
// the newest queue, or as many requests as a has workers are in flight.
func (sd *spoolDir) take(a *attachment, parent context.Context) (e *entry, ctx context.Context, more bool) {
	sd.sp.mu.Lock()
	defer sd.sp.mu.Unlock()
	if parent.Err() != nil || sd.head == len(sd.pending) || len(sd.attached) == 0 ||
		sd.attached[len(sd.attached)-1] != a || len(sd.inflight) >= a.workers {
		return nil, nil, false
	}
	e = sd.popLocked()
	e.inflight = true
	sd.inflight[e] = struct{}{}
	ctx, e.cancel = context.WithCancel(parent)
	return e, ctx, sd.head < len(sd.pending) && len(sd.inflight) < a.workers
}

// read returns a taken request's payload, checked against its header.
func (sd *spoolDir) read(e *entry) ([]byte, error) {
	if e.file == "" {
		return e.mem, nil
	}
	b, err := os.ReadFile(filepath.Join(sd.path, e.file))
	if err != nil {
		return nil, err
	}
	h, err := parseHeader(b)
	if err != nil {
		return nil, err
	}
	payload := b[headerSize:]
	if uint32(len(payload)) != h.length {
		return nil, fmt.Errorf("%w: payload of %d bytes, the header says %d", errCorrupt, len(payload), h.length)
	}
	if crc32.Checksum(payload, castagnoli) != h.crc {
		return nil, fmt.Errorf("%w: payload checksum mismatch", errCorrupt)
	}
	return payload, nil
}

// finish removes a request that was delivered or dropped, once its outcome
// is counted. It reports whether it had been evicted meanwhile (its bytes
// and file are then gone already).
func (sd *spoolDir) finish(e *entry) (evicted bool) {
	sp := sd.sp
	// The file goes first: once the books say the request is gone, a
	// Drain may return and a test or an operator look at the directory.
	if e.file != "" {
		_ = os.Remove(filepath.Join(sd.path, e.file))
	}
	sp.mu.Lock()
	delete(sd.inflight, e)
	e.inflight = false
	evicted = e.evicted
	if !evicted {
		sd.sub(e)
		sp.total -= e.size
	}
	cancel := e.cancel
	e.cancel = nil
	sp.cond.Broadcast()
	sd.signalLocked() // a slot is free
	sp.mu.Unlock()
	cancel()
	return evicted
}

// release puts a request that could not be sent back at the front, to be
// tried again. When it was evicted meanwhile it stays in flight and release
// reports true: the caller counts the drop, then calls finish, so that a
// Drain never returns before the count.
func (sd *spoolDir) release(e *entry) (evicted bool) {
	sp := sd.sp
	sp.mu.Lock()
	if e.evicted {
		sp.mu.Unlock()
		return true
	}
	delete(sd.inflight, e)
	e.inflight = false
	// Once back in line another worker may take e and set a new cancel:
	// keep this send's own.
	cancel := e.cancel
	e.cancel = nil
	sd.insertLocked(e)
	sp.cond.Broadcast()
	sd.signalLocked()
	sp.mu.Unlock()
	cancel()
	return false
}

// isEvicted reports whether the full spool evicted a request in flight.
func (sd *spoolDir) isEvicted(e *entry) bool {
	sd.sp.mu.Lock()
	defer sd.sp.mu.Unlock()
	return e.evicted
}

// noteCorrupt counts a corrupt file found when reading it for sending.
func (sd *spoolDir) noteCorrupt() {
	sd.sp.mu.Lock()
	defer sd.sp.mu.Unlock()
	sd.sp.corrupt[sd.sink]++
}

// lastSeq is the newest sequence number handed out.
func (sd *spoolDir) lastSeq() uint64 {
	sd.sp.mu.Lock()
	defer sd.sp.mu.Unlock()
	return sd.nextSeq - 1
}

// busyUpToLocked reports whether a request numbered mark or lower is
// pending or being sent.
func (sd *spoolDir) busyUpToLocked(mark uint64) bool {
	if sd.head < len(sd.pending) && sd.pending[sd.head].seq <= mark {
		return true
	}
	for e := range sd.inflight {
		if e.seq <= mark {
			return true
		}
	}
	return false
}

// waitUpTo waits until no request numbered mark or lower is left, or ctx
// ends.
func (sd *spoolDir) waitUpTo(ctx context.Context, mark uint64) error {
	sp := sd.sp
	stop := context.AfterFunc(ctx, func() {
		sp.mu.Lock()
		sp.cond.Broadcast()
		sp.mu.Unlock()
	})
	defer stop()
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for sd.busyUpToLocked(mark) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sp.cond.Wait()
	}
	return nil
}

func (sd *spoolDir) pendingUnits() int {
	sd.sp.mu.Lock()
	defer sd.sp.mu.Unlock()
	n := 0
	for _, e := range sd.pending[sd.head:] {
		n += e.units
	}
	return n
}

// detach ends a queue's use of the directory. When no queue is left, the
// requests only in memory (their write failed) are returned to be counted
// as lost, the rest stay on disk for the next sink of the destination, and
// an empty directory is removed.
func (sd *spoolDir) detach(a *attachment) (lost []*entry, left SpoolStat) {
	sp := sd.sp
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for i, x := range sd.attached {
		if x == a {
			sd.attached = append(sd.attached[:i], sd.attached[i+1:]...)
			break
		}
	}
	if len(sd.attached) > 0 {
		sd.signalLocked() // the newest queue may be this one's successor
		return nil, SpoolStat{Sink: sd.sink, Requests: sd.requests, Instances: sd.instances, Bytes: sd.bytes, Attached: true}
	}
	kept := sd.pending[:0]
	for _, e := range sd.pending[sd.head:] {
		if e.file == "" {
			lost = append(lost, e)
			sd.sub(e)
			sp.total -= e.size
			continue
		}
		kept = append(kept, e)
	}
	clear(sd.pending[len(kept):])
	sd.pending, sd.head = kept, 0
	if sd.dirf != nil {
		sd.dirf.Close()
		sd.dirf = nil
	}
	if sd.requests == 0 && len(sd.inflight) == 0 {
		delete(sp.dirs, sd.name)
		_ = os.RemoveAll(sd.path)
	}
	sp.cond.Broadcast()
	return lost, SpoolStat{Sink: sd.sink, Requests: sd.requests, Instances: sd.instances, Bytes: sd.bytes}
}
