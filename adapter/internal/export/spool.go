package export

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The spool is the durable layer of the send queue, after OpenTelemetry's
// persistent queue and Prometheus' WAL: with --spool-dir, every request a push
// sink queues is first written to disk (file and directory fsync'd), and its
// file is removed once the request is delivered, refused for good, or
// dropped. A sink built for the same destination after a restart finds the
// files and sends them, oldest first, before anything new.
//
// Layout of the spool directory:
//
//	LOCK              flock'd by the process using the directory
//	salt              32 random bytes, for keyed digests in sink keys
//	<digest>/SINK     the sink key (no secrets: sink.Factory.Key's contract)
//	<digest>/<seq>.req one request: a 36-byte header, then the payload
//
// <digest> is the first 32 hex digits of SHA-256 of the sink key and <seq>
// a 16-hex-digit sequence number, so that names sort in sending order.

// Drop reasons of the spool, besides those of the Queue.
const (
	// DropSpoolFull: the spool reached --spool-max-bytes and dropped its
	// oldest request to make room.
	DropSpoolFull = "spool_full"
	// DropSpoolCorrupt: a spool file failed its length or checksum test (a
	// torn write, a damaged disk) and was skipped.
	DropSpoolCorrupt = "spool_corrupt"
	// DropReplayRejected: the backend refused for good a request replayed
	// from a previous run (remote write: out of order or out of bounds).
	DropReplayRejected = "replay_rejected"
)

const (
	spoolMagic    = "MMSQ"
	spoolVersion  = 1
	headerSize    = 36
	requestSuffix = ".req"
	sinkFileName  = "SINK"
	lockFileName  = "LOCK"
	saltFileName  = "salt"
	digestLen     = 32 // hex digits of the directory name
	saltLen       = 32
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks a spool file that cannot be trusted.
var errCorrupt = errors.New("corrupt spool file")

// errEvicted is what reading a request evicted meanwhile gives.
var errEvicted = errors.New("evicted from the full spool")

// SpoolOptions configure OpenSpool.
type SpoolOptions struct {
	Dir string
	// MaxBytes caps the spool: files, headers included, of every
	// destination together. When a new request does not fit, the oldest
	// requests (of any destination) are dropped (DropSpoolFull).
	MaxBytes int64
	// OnDrop counts requests lost from a destination no live sink is
	// attached to: corrupt files found at start, requests of an earlier
	// run evicted to make room. Requests of a live sink go to its Queue's
	// OnDrop instead.
	OnDrop func(sink, reason string, units, instances int, err error)
	// OnWriteError reports a request that could not be written; it is kept
	// in memory instead, and is lost if the process dies.
	OnWriteError func(sink string, err error)
}

// SpoolStat describes one destination's spooled requests.
type SpoolStat struct {
	Sink      string
	Requests  int
	Instances int
	Bytes     int64
	// Attached: a live sink is sending them. Otherwise they wait for a
	// handler config naming the destination.
	Attached bool
	// CorruptFiles and WriteErrors count since the spool was opened.
	CorruptFiles int
	WriteErrors  int
}

// Spool is an opened spool directory, shared by the sinks of a process.
type Spool struct {
	dir  string
	max  int64
	opts SpoolOptions
	lock *os.File
	salt []byte

	mu     sync.Mutex
	cond   *sync.Cond // broadcast whenever a request leaves or returns
	total  int64
	dirs   map[string]*spoolDir // by digest
	closed bool
	// Counters by sink, kept after a destination's directory goes, so that
	// they never decrease.
	corrupt, writeErrors map[string]int
}

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

type header struct {
	units, instances int
	written          int64
	length           uint32
	crc              uint32
}

// encodeEntry lays out a spool file: magic, version, units, instances,
// write time, payload length and CRC-32C, the header's own CRC-32C, then
// the payload. Length and checksums let a torn write be told from a
// complete one.
func encodeEntry(units, instances int, written int64, payload []byte) []byte {
	b := make([]byte, headerSize, headerSize+len(payload))
	copy(b, spoolMagic)
	b[4] = spoolVersion
	binary.LittleEndian.PutUint32(b[8:], uint32(units))
	binary.LittleEndian.PutUint32(b[12:], uint32(instances))
	binary.LittleEndian.PutUint64(b[16:], uint64(written))
	binary.LittleEndian.PutUint32(b[24:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(payload, castagnoli))
	binary.LittleEndian.PutUint32(b[32:], crc32.Checksum(b[:32], castagnoli))
	return append(b, payload...)
}

func parseHeader(b []byte) (header, error) {
	if len(b) < headerSize {
		return header{}, fmt.Errorf("%w: %d bytes, shorter than a header", errCorrupt, len(b))
	}
	if string(b[:4]) != spoolMagic || b[4] != spoolVersion {
		return header{}, fmt.Errorf("%w: not a version %d spool file", errCorrupt, spoolVersion)
	}
	if crc32.Checksum(b[:32], castagnoli) != binary.LittleEndian.Uint32(b[32:]) {
		return header{}, fmt.Errorf("%w: header checksum mismatch", errCorrupt)
	}
	return header{
		units:     int(binary.LittleEndian.Uint32(b[8:])),
		instances: int(binary.LittleEndian.Uint32(b[12:])),
		written:   int64(binary.LittleEndian.Uint64(b[16:])),
		length:    binary.LittleEndian.Uint32(b[24:]),
		crc:       binary.LittleEndian.Uint32(b[28:]),
	}, nil
}

// DirName is the name of the directory holding the spool of sink key: a
// digest, so that the key's characters never meet the file system.
func DirName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])[:digestLen]
}

// OpenSpool opens (creating it if needed) and locks a spool directory, and
// indexes what an earlier run left in it. Corrupt files are removed and
// reported to OnDrop.
func OpenSpool(o SpoolOptions) (*Spool, error) {
	if o.Dir == "" {
		return nil, errors.New("spool: no directory")
	}
	if o.MaxBytes <= headerSize {
		return nil, fmt.Errorf("spool: max bytes %d is too small", o.MaxBytes)
	}
	if o.OnDrop == nil {
		o.OnDrop = func(string, string, int, int, error) {}
	}
	if o.OnWriteError == nil {
		o.OnWriteError = func(string, error) {}
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	sp := &Spool{dir: o.Dir, max: o.MaxBytes, opts: o, dirs: map[string]*spoolDir{}, corrupt: map[string]int{}, writeErrors: map[string]int{}}
	sp.cond = sync.NewCond(&sp.mu)
	var err error
	if sp.lock, err = lockDir(filepath.Join(o.Dir, lockFileName)); err != nil {
		return nil, fmt.Errorf("spool %s: %w", o.Dir, err)
	}
	if sp.salt, err = loadSalt(filepath.Join(o.Dir, saltFileName)); err != nil {
		sp.lock.Close()
		return nil, fmt.Errorf("spool %s: %w", o.Dir, err)
	}
	if err := sp.load(); err != nil {
		sp.lock.Close()
		return nil, fmt.Errorf("spool %s: %w", o.Dir, err)
	}
	return sp, nil
}

func loadSalt(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(b) == saltLen {
		return b, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	b = make([]byte, saltLen)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	if err := writeSynced(path, b, nil, true); err != nil {
		return nil, err
	}
	return b, nil
}

// Salt is a random value kept with the spool, for sink keys that digest
// secrets: keyed by it, a key stays the same across restarts (so that the
// sink finds its spool) and still reveals nothing about the secret.
func (sp *Spool) Salt() []byte { return sp.salt }

// Dir is the spool directory.
func (sp *Spool) Dir() string { return sp.dir }

// MaxBytes is the cap.
func (sp *Spool) MaxBytes() int64 { return sp.max }

type lostEntry struct {
	sink             string
	reason           string
	units, instances int
	err              error
}

// load indexes the destinations an earlier run left.
func (sp *Spool) load() error {
	des, err := os.ReadDir(sp.dir)
	if err != nil {
		return err
	}
	var lost []lostEntry
	for _, de := range des {
		if !de.IsDir() || !isDigest(de.Name()) {
			continue
		}
		sd, l, err := sp.loadDir(de.Name())
		if err != nil {
			return err
		}
		lost = append(lost, l...)
		for _, x := range l {
			sp.corrupt[x.sink]++
		}
		if sd != nil {
			sp.dirs[sd.name] = sd
		}
	}
	sp.mu.Lock()
	victims := sp.evictLocked(nil)
	sp.mu.Unlock()
	sp.removeFiles(victims)
	for _, l := range lost {
		sp.opts.OnDrop(l.sink, l.reason, l.units, l.instances, l.err)
	}
	sp.reportVictims(victims)
	return nil
}

func isDigest(name string) bool {
	if len(name) != digestLen {
		return false
	}
	_, err := hex.DecodeString(name)
	return err == nil
}

func (sp *Spool) loadDir(name string) (*spoolDir, []lostEntry, error) {
	path := filepath.Join(sp.dir, name)
	sd := &spoolDir{sp: sp, name: name, path: path, nextSeq: 1, inflight: map[*entry]struct{}{}}
	if b, err := os.ReadFile(filepath.Join(path, sinkFileName)); err == nil {
		sd.sink = strings.TrimSpace(string(b))
	}
	if sd.sink == "" {
		sd.sink = "spool:" + name // a directory whose SINK file was lost
	}
	des, err := os.ReadDir(path)
	if err != nil {
		return nil, nil, err
	}
	var lost []lostEntry
	for _, de := range des {
		n := de.Name()
		if !strings.HasSuffix(n, requestSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(n, requestSuffix), 16, 64)
		if err != nil {
			continue
		}
		sd.nextSeq = max(sd.nextSeq, seq+1)
		e, err := readEntryHeader(filepath.Join(path, n))
		if err != nil {
			_ = os.Remove(filepath.Join(path, n))
			lost = append(lost, lostEntry{sink: sd.sink, reason: DropSpoolCorrupt, units: e.units, instances: e.instances,
				err: fmt.Errorf("%s: %w", filepath.Join(name, n), err)})
			continue
		}
		e.seq, e.file, e.replayed = seq, n, true
		sd.pending = append(sd.pending, e)
		sd.add(e)
		sp.total += e.size
	}
	sort.Slice(sd.pending, func(i, j int) bool { return sd.pending[i].seq < sd.pending[j].seq })
	if len(sd.pending) == 0 {
		// Nothing left to send: forget the destination (it is created
		// again if its sink comes back).
		_ = os.RemoveAll(path)
		return nil, lost, nil
	}
	return sd, lost, nil
}

// readEntryHeader checks a file's header and length. The payload checksum
// is checked when the request is read for sending. On error the returned
// entry still carries the counts when the header itself was sound.
func readEntryHeader(path string) (*entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return &entry{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return &entry{}, err
	}
	b := make([]byte, headerSize)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return &entry{}, err
	}
	h, err := parseHeader(b[:n])
	if err != nil {
		return &entry{}, err
	}
	e := &entry{units: h.units, instances: h.instances, written: h.written, size: st.Size()}
	if want := int64(headerSize) + int64(h.length); st.Size() != want {
		return e, fmt.Errorf("%w: %d bytes, the header says %d (torn write)", errCorrupt, st.Size(), want)
	}
	return e, nil
}

// Stats lists the destinations with spooled requests or counted errors,
// sorted by sink.
func (sp *Spool) Stats() []SpoolStat {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	by := map[string]*SpoolStat{}
	get := func(sink string) *SpoolStat {
		if st := by[sink]; st != nil {
			return st
		}
		st := &SpoolStat{Sink: sink}
		by[sink] = st
		return st
	}
	for _, sd := range sp.dirs {
		st := get(sd.sink)
		st.Requests += sd.requests
		st.Instances += sd.instances
		st.Bytes += sd.bytes
		st.Attached = st.Attached || len(sd.attached) > 0
	}
	for sink, n := range sp.corrupt {
		get(sink).CorruptFiles = n
	}
	for sink, n := range sp.writeErrors {
		get(sink).WriteErrors = n
	}
	out := make([]SpoolStat, 0, len(by))
	for _, st := range by {
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Sink < out[j].Sink })
	return out
}

// Bytes is the size of every spooled request together.
func (sp *Spool) Bytes() int64 {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.total
}

// Close releases the directory lock. Sinks must be closed first; what they
// left stays on disk for the next run.
func (sp *Spool) Close() error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed {
		return nil
	}
	sp.closed = true
	for _, sd := range sp.dirs {
		if sd.dirf != nil {
			sd.dirf.Close()
			sd.dirf = nil
		}
	}
	return sp.lock.Close()
}

// attach hands the destination of key to a queue, creating its directory
// when none is left from before.
func (sp *Spool) attach(key string, workers int, onDrop func(string, int, int, error)) (*spoolDir, *attachment, error) {
	name := DirName(key)
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed {
		return nil, nil, errors.New("spool is closed")
	}
	sd := sp.dirs[name]
	if sd == nil {
		sd = &spoolDir{sp: sp, name: name, path: filepath.Join(sp.dir, name), sink: key, nextSeq: 1,
			inflight: map[*entry]struct{}{}}
	}
	if sd.dirf == nil {
		if err := os.MkdirAll(sd.path, 0o700); err != nil {
			return nil, nil, err
		}
		// The SINK file names the destination for operators and for the
		// drop counters of an orphaned directory.
		if err := writeSynced(filepath.Join(sd.path, sinkFileName), []byte(key+"\n"), nil, true); err != nil {
			return nil, nil, err
		}
		f, err := os.Open(sd.path)
		if err != nil {
			return nil, nil, err
		}
		if err := syncDir(sp.dir); err != nil {
			f.Close()
			return nil, nil, err
		}
		sd.dirf = f
	}
	sd.sink = key
	sp.dirs[name] = sd
	a := &attachment{onDrop: onDrop, workers: max(workers, 1), wake: make(chan struct{}, 1)}
	sd.attached = append(sd.attached, a)
	sd.signalLocked() // replay what an earlier run or sink left
	return sd, a, nil
}

// writeSynced writes a whole file and fsyncs it, then its directory (dir,
// open, or else opened from path), so that the file survives a crash. A
// request file is new (O_EXCL: a name is never reused); other files may be
// replaced. A failed write leaves no file.
func writeSynced(path string, data []byte, dir *os.File, replace bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if replace {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if dir != nil {
			err = dir.Sync()
		} else {
			err = syncDir(filepath.Dir(path))
		}
	}
	if err != nil {
		_ = os.Remove(path)
	}
	return err
}

func syncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
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
			v.drop(DropSpoolFull, v.units, v.instances, errors.New("spool full: oldest request dropped"))
		}
	}
}

// put writes a request and indexes it, evicting the oldest requests when
// the spool is over its cap. A request larger than the whole spool is
// dropped itself. A request that cannot be written is kept in memory.
func (sd *spoolDir) put(a *attachment, payload []byte, units, instances int) {
	sp := sd.sp
	size := int64(headerSize + len(payload))
	if size > sp.max {
		a.onDrop(DropSpoolFull, units, instances, fmt.Errorf("request of %d bytes is larger than the spool (%d)", size, sp.max))
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
