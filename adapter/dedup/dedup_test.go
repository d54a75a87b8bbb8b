package dedup

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestInsert(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name string
		ids  []string
		want []bool
	}{
		{"empty ids are never duplicates", []string{"", ""}, []bool{true, true}},
		{"mixer counter", []string{"18446744073709551615", "18446744073709551614", "18446744073709551615"}, []bool{true, true, false}},
		{"leading zeros are another id", []string{"7", "007", "007"}, []bool{true, true, false}},
		{"non-numeric", []string{"abc", "abd", "abc"}, []bool{true, true, false}},
		{"overflow is a string", []string{"18446744073709551616", "18446744073709551616"}, []bool{true, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := New(time.Minute)
			for i, id := range tc.ids {
				require.Equal(t, tc.want[i], w.Insert([]byte(id), t0), "id %q", id)
			}
		})
	}
}

func TestForgetsAfterTTL(t *testing.T) {
	w := New(time.Minute)
	t0 := time.Unix(1000, 0)
	require.True(t, w.Insert([]byte("5"), t0))
	require.True(t, w.Insert([]byte("x"), t0))
	require.False(t, w.Insert([]byte("5"), t0.Add(30*time.Second)))
	require.False(t, w.Insert([]byte("x"), t0.Add(30*time.Second)))

	later := t0.Add(3 * time.Minute)
	require.True(t, w.Insert([]byte(strconv.Itoa(1<<20)), later), "a new block sweeps idle ones")
	require.True(t, w.Insert([]byte("5"), later))
	w.Insert([]byte("y"), later)
	w.Insert([]byte("z"), later.Add(2*time.Minute))
	require.True(t, w.Insert([]byte("x"), later.Add(2*time.Minute)), "two rotations forget a string id")
}

func TestRemove(t *testing.T) {
	w := New(time.Minute)
	t0 := time.Unix(1000, 0)
	for _, id := range []string{"42", "s"} {
		require.True(t, w.Insert([]byte(id), t0))
		w.Remove([]byte(id))
		require.True(t, w.Insert([]byte(id), t0), id)
	}
}

func TestMemoryIsBoundedForScatteredIDs(t *testing.T) {
	w := New(time.Hour)
	t0 := time.Unix(1000, 0)
	for i := uint64(0); i < 3*maxBlocks; i++ {
		require.True(t, w.Insert([]byte(strconv.FormatUint(i<<blockShift, 10)), t0))
	}
	require.LessOrEqual(t, len(w.blocks), maxBlocks)
	require.LessOrEqual(t, len(w.cur)+len(w.prev), 2*maxGeneration)
	require.False(t, w.Insert([]byte(strconv.FormatUint((3*maxBlocks-1)<<blockShift, 10)), t0), "recent overflow ids are still caught")
}

func BenchmarkInsertSequential(b *testing.B) {
	w := New(time.Minute)
	t0 := time.Unix(1000, 0)
	ids := make([][]byte, 4096)
	for i := range ids {
		ids[i] = []byte(strconv.FormatUint(uint64(i)+1<<40, 10))
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		w.Insert(ids[i%len(ids)], t0)
	}
}
