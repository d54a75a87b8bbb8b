package export

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
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

// SpoolOptions configure OpenSpool.
type SpoolOptions struct {
	Dir string
	// MaxBytes caps the spool: files, headers included, of every
	// destination together. When a new request does not fit, the oldest
	// requests (of any destination) are dropped (telemetry.DropSpoolFull).
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
