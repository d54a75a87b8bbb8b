package export_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
)

// payloadSize makes every spooled request the same size on disk, so that
// tests can set caps in requests.
const payloadSize = 64

const fileSize = 36 + payloadSize // header + payload

var reqCodec = export.Codec[req]{
	Encode: func(r req) []byte {
		b := make([]byte, payloadSize)
		binary.LittleEndian.PutUint64(b, uint64(r.id))
		return b
	},
	Decode: func(p []byte, units, instances int) (req, error) {
		if len(p) != payloadSize {
			return req{}, errors.New("bad payload")
		}
		return req{id: int(binary.LittleEndian.Uint64(p)), units: units, instances: instances}, nil
	},
}

// backend is a fake destination shared by the queues of a test: it records
// the ids it accepts, in order, and can be down (sends wait until it is up
// or their context ends) or refuse ids for good.
type backend struct {
	down   atomic.Bool
	mu     sync.Mutex
	got    []int
	refuse map[int]bool
}

func (b *backend) send(ctx context.Context, r req) error {
	for b.down.Load() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.refuse[r.id] {
		return export.Permanent(errors.New("400 out of order sample"))
	}
	b.got = append(b.got, r.id)
	return nil
}

func (b *backend) received() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.got...)
}

// drops records OnDrop calls: instances by reason.
type drops struct {
	mu sync.Mutex
	by map[string]int
}

func (d *drops) onDrop(reason string, _, instances int, _ error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.by == nil {
		d.by = map[string]int{}
	}
	d.by[reason] += instances
}

func (d *drops) onSpoolDrop(_, reason string, units, instances int, err error) {
	d.onDrop(reason, units, instances, err)
}

func (d *drops) get() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]int{}
	for k, v := range d.by {
		out[k] = v
	}
	return out
}

func openSpool(t *testing.T, dir string, maxBytes int64, d *drops) *export.Spool {
	t.Helper()
	sp, err := export.OpenSpool(export.SpoolOptions{Dir: dir, MaxBytes: maxBytes, OnDrop: d.onSpoolDrop})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sp.Close() })
	return sp
}

func spooledQueue(t *testing.T, sp *export.Spool, key string, b *backend, d *drops, maxElapsed time.Duration) *export.Queue[req] {
	t.Helper()
	q, err := export.NewSpooledQueue(b.send, export.QueueOptions{Capacity: 1, Workers: 1, MaxElapsed: maxElapsed, OnDrop: d.onDrop},
		sp, key, reqCodec)
	require.NoError(t, err)
	return q
}

func closeQuickly(q *export.Queue[req]) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	return q.Close(ctx)
}

func drain(t *testing.T, q *export.Queue[req]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, q.Drain(ctx))
}

func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(path string, de os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, ".req") {
			out = append(out, path)
		}
		return err
	}))
	sort.Strings(out)
	return out
}

func TestSpoolKeepsRequestsAcrossARestartAndReplaysThemFirst(t *testing.T) {
	dir := t.TempDir()
	var d drops
	b := &backend{}
	b.down.Store(true)
	sp := openSpool(t, dir, 1<<20, &d)
	q := spooledQueue(t, sp, "librato:https://example#TAGGED#abc", b, &d, 20*time.Millisecond)
	for i := 0; i < 5; i++ {
		q.Put(req{id: i, units: 1, instances: 10})
	}
	require.Len(t, spoolFiles(t, dir), 5, "each request is on disk when Put returns")
	time.Sleep(50 * time.Millisecond) // several retry rounds run out
	err := closeQuickly(q)
	require.ErrorContains(t, err, "5 requests (50 instances) not sent, kept in the spool")
	require.Empty(t, d.get(), "nothing is dropped: retries running out or a shutdown keep spooled requests")
	require.NoError(t, sp.Close())

	// The next run: the sink of the same destination is built again.
	sp2 := openSpool(t, dir, 1<<20, &d)
	require.Equal(t, []export.SpoolStat{{Sink: "librato:https://example#TAGGED#abc", Requests: 5, Instances: 50, Bytes: 5 * fileSize}}, sp2.Stats())
	b.down.Store(false)
	q2 := spooledQueue(t, sp2, "librato:https://example#TAGGED#abc", b, &d, time.Second)
	q2.Put(req{id: 5, units: 1, instances: 10})
	drain(t, q2)
	require.Equal(t, []int{0, 1, 2, 3, 4, 5}, b.received(), "the earlier run's requests first, in order")
	require.NoError(t, q2.Close(context.Background()))
	require.Empty(t, spoolFiles(t, dir))
	require.Empty(t, sp2.Stats(), "an emptied destination leaves nothing behind")
	require.Empty(t, d.get())
}

func TestSpoolEvictsTheOldestRequestsOfAnyDestination(t *testing.T) {
	var d, da, db drops
	b := &backend{}
	b.down.Store(true)
	sp := openSpool(t, t.TempDir(), 5*fileSize, &d)
	qa := spooledQueue(t, sp, "a", b, &da, time.Hour)
	qb := spooledQueue(t, sp, "b", b, &db, time.Hour)
	// a0 b0 a1 b1 a2 b2: six requests, room for five. a0 is being sent
	// (the worker holds it), so its eviction cancels the send, and it is
	// counted when that send ends.
	for i := 0; i < 3; i++ {
		qa.Put(req{id: 10 + i, units: 1, instances: 1})
		qb.Put(req{id: 20 + i, units: 1, instances: 100})
	}
	require.Eventually(t, func() bool { return da.get()[export.DropSpoolFull] == 1 }, 5*time.Second, time.Millisecond)
	qb.Put(req{id: 23, units: 1, instances: 100}) // evicts b0, in flight too
	require.Eventually(t, func() bool { return db.get()[export.DropSpoolFull] == 100 }, 5*time.Second, time.Millisecond)
	require.LessOrEqual(t, sp.Bytes(), int64(5*fileSize))
	b.down.Store(false)
	drain(t, qa)
	drain(t, qb)
	got := b.received()
	sort.Ints(got)
	require.Equal(t, []int{11, 12, 21, 22, 23}, got)
	require.Empty(t, d.get(), "live destinations count their own drops")
	require.NoError(t, qa.Close(context.Background()))
	require.NoError(t, qb.Close(context.Background()))
}

func TestSpoolOfAnEarlierRunIsEvictedUnderItsSinkName(t *testing.T) {
	dir := t.TempDir()
	var d drops
	b := &backend{}
	b.down.Store(true)
	sp := openSpool(t, dir, 1<<20, &d)
	old := spooledQueue(t, sp, "remote_write:http://old/api/v1/write#1", b, &d, time.Hour)
	for i := 0; i < 4; i++ {
		old.Put(req{id: i, units: 1, instances: 7})
	}
	require.Error(t, closeQuickly(old))
	require.NoError(t, sp.Close())

	// Reopened with a cap of three requests: the oldest goes at once.
	var d2 drops
	var mu sync.Mutex
	var sinks []string
	sp2, err := export.OpenSpool(export.SpoolOptions{Dir: dir, MaxBytes: 3 * fileSize, OnDrop: func(sink, reason string, u, n int, err error) {
		mu.Lock()
		sinks = append(sinks, sink)
		mu.Unlock()
		d2.onDrop(reason, u, n, err)
	}})
	require.NoError(t, err)
	defer sp2.Close()
	require.Equal(t, map[string]int{export.DropSpoolFull: 7}, d2.get())
	// A new destination makes room by dropping the old one's oldest.
	var dn drops
	b.down.Store(false)
	q := spooledQueue(t, sp2, "librato:new", b, &dn, time.Hour)
	q.Put(req{id: 100, units: 1, instances: 1})
	drain(t, q)
	require.Equal(t, map[string]int{export.DropSpoolFull: 14}, d2.get())
	require.Equal(t, []string{"remote_write:http://old/api/v1/write#1", "remote_write:http://old/api/v1/write#1"}, sinks,
		"counted under the sink key recorded with the directory")
	require.Equal(t, []int{100}, b.received())
	require.NoError(t, q.Close(context.Background()))

	// Evicting the rest empties the orphan: its directory goes.
	q2 := spooledQueue(t, sp2, "librato:new", b, &dn, time.Hour)
	b.down.Store(true)
	for i := 0; i < 3; i++ {
		q2.Put(req{id: 200 + i, units: 1, instances: 1})
	}
	require.Equal(t, map[string]int{export.DropSpoolFull: 28}, d2.get())
	require.NoDirExists(t, filepath.Join(dir, export.DirName("remote_write:http://old/api/v1/write#1")))
	for _, st := range sp2.Stats() {
		require.NotEqual(t, "remote_write:http://old/api/v1/write#1", st.Sink)
	}
	require.Error(t, closeQuickly(q2))
}

func TestCorruptSpoolFilesAreSkippedAndCounted(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(t *testing.T, path string)
		// atOpen: found by the header and length check when the spool is
		// opened (counted through SpoolOptions.OnDrop); otherwise by the
		// payload checksum when the request is read for sending.
		atOpen    bool
		instances int // what the drop counter can still tell
	}{
		{"torn write: cut short", func(t *testing.T, p string) { require.NoError(t, os.Truncate(p, fileSize-10)) }, true, 2},
		{"torn write: header only", func(t *testing.T, p string) { require.NoError(t, os.Truncate(p, 36)) }, true, 2},
		{"empty file", func(t *testing.T, p string) { require.NoError(t, os.Truncate(p, 0)) }, true, 0},
		{"garbage header", func(t *testing.T, p string) { flip(t, p, 9) }, true, 0},
		{"payload bit flipped", func(t *testing.T, p string) { flip(t, p, fileSize-1) }, false, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var d drops
			b := &backend{}
			b.down.Store(true)
			sp := openSpool(t, dir, 1<<20, &d)
			q := spooledQueue(t, sp, "k", b, &d, time.Hour)
			for i := 0; i < 3; i++ {
				q.Put(req{id: i, units: 1, instances: 2})
			}
			require.Error(t, closeQuickly(q))
			require.NoError(t, sp.Close())
			files := spoolFiles(t, dir)
			require.Len(t, files, 3)
			tc.corrupt(t, files[1])

			var atOpen, atSend drops
			sp2 := openSpool(t, dir, 1<<20, &atOpen)
			b.down.Store(false)
			q2 := spooledQueue(t, sp2, "k", b, &atSend, time.Hour)
			drain(t, q2)
			require.Equal(t, []int{0, 2}, b.received(), "the sound requests are sent, in order")
			want := map[string]int{export.DropSpoolCorrupt: tc.instances}
			if tc.atOpen {
				require.Equal(t, want, atOpen.get())
				require.Empty(t, atSend.get())
			} else {
				require.Empty(t, atOpen.get())
				require.Equal(t, want, atSend.get())
			}
			require.Equal(t, 1, sp2.Stats()[0].CorruptFiles)
			require.Empty(t, spoolFiles(t, dir), "the corrupt file is removed, not retried")
			require.NoError(t, q2.Close(context.Background()))
		})
	}
}

func flip(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	b := make([]byte, 1)
	_, err = f.ReadAt(b, at)
	require.NoError(t, err)
	b[0] ^= 0x40
	_, err = f.WriteAt(b, at)
	require.NoError(t, err)
}

func TestRefusalsOfReplayedRequestsAreCountedApart(t *testing.T) {
	dir := t.TempDir()
	var d drops
	b := &backend{refuse: map[int]bool{1: true, 2: true}}
	b.down.Store(true)
	sp := openSpool(t, dir, 1<<20, &d)
	q := spooledQueue(t, sp, "k", b, &d, time.Hour)
	q.Put(req{id: 0, units: 1, instances: 1})
	q.Put(req{id: 1, units: 1, instances: 3})
	require.Error(t, closeQuickly(q))
	require.NoError(t, sp.Close())

	sp2 := openSpool(t, dir, 1<<20, &d)
	b.down.Store(false)
	q2 := spooledQueue(t, sp2, "k", b, &d, time.Hour)
	q2.Put(req{id: 2, units: 1, instances: 5})
	drain(t, q2)
	require.Equal(t, []int{0}, b.received())
	require.Equal(t, map[string]int{export.DropReplayRejected: 3, export.DropRejected: 5}, d.get(),
		"a replayed request refused (remote write: out of order) is told from a refusal of new data")
	require.NoError(t, q2.Close(context.Background()))
}

func TestSpooledRequestsOutliveRetryRounds(t *testing.T) {
	var d drops
	b := &backend{}
	b.down.Store(true)
	sp := openSpool(t, t.TempDir(), 1<<20, &d)
	q := spooledQueue(t, sp, "k", b, &d, 5*time.Millisecond)
	q.Put(req{id: 0, units: 1, instances: 1})
	q.Put(req{id: 1, units: 1, instances: 1})
	time.Sleep(60 * time.Millisecond) // many 5 ms retry rounds run out
	b.down.Store(false)
	drain(t, q)
	require.Equal(t, []int{0, 1}, b.received())
	require.Empty(t, d.get(), "no retries_exhausted with a spool: only the cap drops")
	require.NoError(t, q.Close(context.Background()))
}

func TestAFailedSpoolWriteKeepsTheRequestInMemory(t *testing.T) {
	dir := t.TempDir()
	var d drops
	b := &backend{}
	b.down.Store(true)
	var writeErrs atomic.Int32
	sp, err := export.OpenSpool(export.SpoolOptions{Dir: dir, MaxBytes: 1 << 20, OnDrop: d.onSpoolDrop,
		OnWriteError: func(string, error) { writeErrs.Add(1) }})
	require.NoError(t, err)
	defer sp.Close()
	q := spooledQueue(t, sp, "k", b, &d, time.Hour)
	// The directory disappears (a volume unmounted, an operator's rm).
	require.NoError(t, os.RemoveAll(filepath.Join(dir, export.DirName("k"))))
	q.Put(req{id: 0, units: 1, instances: 1})
	require.EqualValues(t, 1, writeErrs.Load())
	require.Equal(t, 1, sp.Stats()[0].WriteErrors)
	b.down.Store(false)
	drain(t, q)
	require.Equal(t, []int{0}, b.received())
	require.Empty(t, d.get())
	require.NoError(t, q.Close(context.Background()))
}

func TestASpoolFileThatVanishedIsCountedNotRetried(t *testing.T) {
	dir := t.TempDir()
	var d drops
	b := &backend{}
	b.down.Store(true)
	sp := openSpool(t, dir, 1<<20, &d)
	q := spooledQueue(t, sp, "k", b, &d, time.Hour)
	q.Put(req{id: 0, units: 1, instances: 6})
	q.Put(req{id: 1, units: 1, instances: 1})
	require.Error(t, closeQuickly(q))
	require.NoError(t, sp.Close())
	sp2 := openSpool(t, dir, 1<<20, &d)
	require.NoError(t, os.Remove(spoolFiles(t, dir)[0])) // after indexing, before sending
	b.down.Store(false)
	q2 := spooledQueue(t, sp2, "k", b, &d, time.Hour)
	drain(t, q2)
	require.Equal(t, []int{1}, b.received())
	require.Equal(t, map[string]int{export.DropSpoolCorrupt: 6}, d.get())
	require.NoError(t, q2.Close(context.Background()))
}

func TestARequestOnlyInMemoryIsCountedWhenTheSinkCloses(t *testing.T) {
	dir := t.TempDir()
	var d drops
	b := &backend{}
	b.down.Store(true)
	sp := openSpool(t, dir, 1<<20, &d)
	q := spooledQueue(t, sp, "k", b, &d, time.Hour)
	require.NoError(t, os.RemoveAll(filepath.Join(dir, export.DirName("k"))))
	q.Put(req{id: 0, units: 1, instances: 4})
	require.Error(t, closeQuickly(q))
	require.Equal(t, map[string]int{export.DropShutdown: 4}, d.get())
}

func TestSinksOfOneDestinationShareItsSpool(t *testing.T) {
	var d drops
	b := &backend{}
	b.down.Store(true)
	sp := openSpool(t, t.TempDir(), 1<<20, &d)
	// The old sink is closing (its last handler went idle) when a handler
	// for the same destination builds the next one.
	old := spooledQueue(t, sp, "k", b, &d, time.Hour)
	for i := 0; i < 3; i++ {
		old.Put(req{id: i, units: 1, instances: 1})
	}
	next := spooledQueue(t, sp, "k", b, &d, time.Hour)
	next.Put(req{id: 3, units: 1, instances: 1})
	require.Error(t, closeQuickly(old), "the old sink gives up at its deadline")
	b.down.Store(false)
	drain(t, next)
	require.Equal(t, []int{0, 1, 2, 3}, b.received(), "the next sink sends what the old one left, in order")
	require.Empty(t, d.get())
	require.NoError(t, next.Close(context.Background()))
}

func TestASpoolDirectoryServesOneProcess(t *testing.T) {
	dir := t.TempDir()
	sp := openSpool(t, dir, 1<<20, &drops{})
	_, err := export.OpenSpool(export.SpoolOptions{Dir: dir, MaxBytes: 1 << 20})
	require.ErrorContains(t, err, "in use by another process")
	require.NoError(t, sp.Close())
	sp2, err := export.OpenSpool(export.SpoolOptions{Dir: dir, MaxBytes: 1 << 20})
	require.NoError(t, err)
	require.Equal(t, sp.Salt(), sp2.Salt(), "the salt for keyed digests survives a restart")
	require.Len(t, sp2.Salt(), 32)
	require.NoError(t, sp2.Close())
}

func TestARequestLargerThanTheSpoolIsDropped(t *testing.T) {
	var d drops
	sp := openSpool(t, t.TempDir(), fileSize-1, &d)
	q := spooledQueue(t, sp, "k", &backend{}, &d, time.Hour)
	q.Put(req{id: 0, units: 1, instances: 9})
	require.Equal(t, map[string]int{export.DropSpoolFull: 9}, d.get())
	require.NoError(t, q.Close(context.Background()))
}

// FuzzSpoolFile feeds arbitrary bytes to the spool as a request file left by
// an earlier run: it is either sent or counted as corrupt, never a crash
// and never both.
// fuzz budget: 5000x
func FuzzSpoolFile(f *testing.F) {
	valid := func() []byte {
		dir := f.TempDir()
		var d drops
		b := &backend{}
		b.down.Store(true)
		sp, err := export.OpenSpool(export.SpoolOptions{Dir: dir, MaxBytes: 1 << 20, OnDrop: d.onSpoolDrop})
		if err != nil {
			f.Fatal(err)
		}
		q, err := export.NewSpooledQueue(b.send, export.QueueOptions{Workers: 1, MaxElapsed: time.Hour}, sp, "k", reqCodec)
		if err != nil {
			f.Fatal(err)
		}
		q.Put(req{id: 7, units: 1, instances: 3})
		_ = closeQuickly(q)
		_ = sp.Close()
		var files []string
		_ = filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".req") {
				files = append(files, p)
			}
			return err
		})
		data, err := os.ReadFile(files[0])
		if err != nil {
			f.Fatal(err)
		}
		return data
	}()
	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add(valid[:36])
	f.Add([]byte{})
	f.Add([]byte("MMSQ\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		sub := filepath.Join(dir, export.DirName("k"))
		require.NoError(t, os.MkdirAll(sub, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(sub, "SINK"), []byte("k\n"), 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(sub, "0000000000000001.req"), data, 0o600))
		var atOpen, atSend drops
		sp, err := export.OpenSpool(export.SpoolOptions{Dir: dir, MaxBytes: 1 << 20, OnDrop: atOpen.onSpoolDrop})
		require.NoError(t, err)
		defer sp.Close()
		b := &backend{}
		q, err := export.NewSpooledQueue(b.send, export.QueueOptions{Workers: 1, MaxElapsed: time.Hour, OnDrop: atSend.onDrop}, sp, "k", reqCodec)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, q.Drain(ctx))
		require.NoError(t, q.Close(ctx))
		corrupt := sp.Stats()
		n := 0
		for _, st := range corrupt {
			n += st.CorruptFiles
		}
		require.Equal(t, 1, len(b.received())+n, "sent or counted as corrupt, exactly once")
		require.Empty(t, spoolFiles(t, dir))
	})
}
