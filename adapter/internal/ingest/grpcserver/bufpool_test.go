package grpcserver

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRecvPool(t *testing.T) {
	p := newRecvPool()
	for _, tc := range []struct{ n, cap int }{{0, 256}, {1, 256}, {256, 256}, {257, 4096}, {16000, 16384}, {16384, 16384}, {20000, 32768},
		{1 << 20, 1 << 20}, {1<<20 + 1, 1<<20 + 1}} {
		b := p.Get(tc.n)
		require.Len(t, *b, tc.n)
		require.Equal(t, tc.cap, cap(*b), "Get(%d)", tc.n)
		p.Put(b)
	}
	// A buffer comes back from its tier as it was left: not cleared (the
	// frame read into it overwrites what is read).
	kept := false
	for range 100 { // sync.Pool may drop a buffer; one of many tries keeps it
		b := p.Get(16000)
		copy(*b, "frame")
		p.Put(b)
		got := p.Get(15000)
		require.Len(t, *got, 15000)
		if kept = string((*got)[:5]) == "frame"; kept {
			break
		}
	}
	require.True(t, kept, "buffers are reused")
	// A buffer of no tier's size is not pooled.
	odd := make([]byte, 5000)
	p.Put(&odd)
	require.Equal(t, 256, cap(*p.Get(1)))
}
