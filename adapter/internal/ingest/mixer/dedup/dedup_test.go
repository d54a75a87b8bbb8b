package dedup

import (
	"bytes"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type call struct {
	id      string
	content uint64
}

func TestObserve(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name          string
		deduplicate   bool
		calls         []call
		wantReused    []bool
		wantDuplicate []bool
	}{{
		name:          "off: reused ids are seen, never dropped",
		calls:         []call{{"7", 1}, {"7", 1}, {"7", 2}, {"8", 1}},
		wantReused:    []bool{false, true, true, false},
		wantDuplicate: []bool{false, false, false, false},
	}, {
		name:          "on: same id and content is a duplicate, another content is not",
		deduplicate:   true,
		calls:         []call{{"7", 1}, {"7", 1}, {"7", 2}, {"7", 2}, {"7", 1}, {"8", 1}},
		wantReused:    []bool{false, true, true, true, true, false},
		wantDuplicate: []bool{false, true, false, true, true, false},
	}, {
		name:          "ids are bytes: leading zeros make another id",
		deduplicate:   true,
		calls:         []call{{"7", 1}, {"007", 1}, {"007", 1}},
		wantReused:    []bool{false, false, true},
		wantDuplicate: []bool{false, false, true},
	}, {
		name:          "non-numeric ids",
		deduplicate:   true,
		calls:         []call{{"abc", 1}, {"abd", 1}, {"abc", 1}},
		wantReused:    []bool{false, false, true},
		wantDuplicate: []bool{false, false, true},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := New(Options{Window: time.Minute, Deduplicate: tc.deduplicate})
			for i, c := range tc.calls {
				v := w.Observe(w.Key([]byte("scope"), []byte(c.id)), c.content, t0)
				require.Equal(t, tc.wantReused[i], v.Reused, "call %d (%q) reused", i, c.id)
				require.Equal(t, tc.wantDuplicate[i], v.Duplicate, "call %d (%q) duplicate", i, c.id)
			}
		})
	}
}

func TestScopesAreSeparate(t *testing.T) {
	w := New(Options{Window: time.Minute, Deduplicate: true})
	t0 := time.Unix(1000, 0)
	require.False(t, w.Observe(w.Key([]byte("a"), []byte("1")), 1, t0).Reused)
	require.False(t, w.Observe(w.Key([]byte("b"), []byte("1")), 1, t0).Reused)
	// The separator keeps ("a", "b1") and ("ab", "1") apart.
	require.NotEqual(t, w.Key([]byte("a"), []byte("b1")), w.Key([]byte("ab"), []byte("1")))
}

func TestForgetsAfterTwoWindows(t *testing.T) {
	w := New(Options{Window: time.Minute, Deduplicate: true})
	t0 := time.Unix(1000, 0)
	k := w.Key(nil, []byte("5"))
	w.Observe(k, 1, t0)
	require.True(t, w.Observe(k, 1, t0.Add(30*time.Second)).Duplicate, "within the window")
	// One rotation keeps it in the previous generation...
	w.Observe(w.Key(nil, []byte("x")), 1, t0.Add(90*time.Second))
	require.True(t, w.Observe(k, 1, t0.Add(100*time.Second)).Duplicate)
	// ...two forget it.
	w.Observe(w.Key(nil, []byte("y")), 1, t0.Add(200*time.Second))
	w.Observe(w.Key(nil, []byte("z")), 1, t0.Add(300*time.Second))
	v := w.Observe(k, 1, t0.Add(300*time.Second))
	require.False(t, v.Reused)
	require.False(t, v.Duplicate)
}

func TestForget(t *testing.T) {
	w := New(Options{Window: time.Minute, Deduplicate: true})
	t0 := time.Unix(1000, 0)
	k := w.Key(nil, []byte("42"))
	w.Observe(k, 9, t0)
	w.Forget(k, 9)
	v := w.Observe(k, 9, t0)
	require.False(t, v.Duplicate, "a refused call's corrected re-send counts")
	require.True(t, v.Reused, "its id was seen all the same")
}

// Memory is bounded by the count cap whatever callers send: unique ids of
// 1 MB each keep nothing of their bytes.
func TestMemoryIsBoundedWhateverTheIDs(t *testing.T) {
	const maxIDs = 1000
	w := New(Options{Window: time.Hour, Deduplicate: true, MaxIDs: maxIDs})
	t0 := time.Unix(1000, 0)
	id := bytes.Repeat([]byte("x"), 1<<20)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 20*maxIDs; i++ {
		copy(id, strconv.Itoa(i))
		w.Observe(w.Key(nil, id), uint64(i), t0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	require.LessOrEqual(t, w.Len(), 2*maxIDs)
	require.Less(t, int64(after.HeapAlloc)-int64(before.HeapAlloc), int64(1<<20),
		"20,000 unique 1 MB ids hold less than 1 MB")
}

func BenchmarkObserveSequential(b *testing.B) {
	for _, dd := range []bool{false, true} {
		b.Run("deduplicate="+strconv.FormatBool(dd), func(b *testing.B) {
			w := New(Options{Window: time.Minute, Deduplicate: dd})
			t0 := time.Unix(1000, 0)
			ids := make([][]byte, 4096)
			for i := range ids {
				ids[i] = []byte(strconv.FormatUint(uint64(i)+1<<40, 10))
			}
			scope := bytes.Repeat([]byte{7}, 32)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				w.Observe(w.Key(scope, ids[i%len(ids)]), uint64(i), t0)
			}
		})
	}
}
