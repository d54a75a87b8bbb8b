package grpcserver

import (
	"sync"

	"google.golang.org/grpc/mem"
)

// recvPool is the buffer pool the server reads messages into: gRPC's default
// tiers (256 B, 4 KiB, 16 KiB, the largest HTTP/2 frame, 32 KiB and 1 MiB),
// without the default pool's clearing of every buffer it hands out. A
// buffer is filled by the frame read into it before anything reads it, so
// clearing it is pure cost: 16 KiB per DATA frame, 3% of the adapter's CPU
// under a stream of access logs (docs/BENCHMARKS.md). gRPC's own ALTS
// transport reads into such a pool. Buffers bigger than the largest tier
// are not kept; the GC empties the tiers, as it does gRPC's.
type recvPool struct {
	tiers [5]recvTier
}

type recvTier struct {
	size int
	pool sync.Pool
}

func newRecvPool() *recvPool {
	p := &recvPool{}
	for i, size := range [...]int{1 << 8, 1 << 12, 1 << 14, 1 << 15, 1 << 20} {
		p.tiers[i].size = size
	}
	return p
}

var _ mem.BufferPool = (*recvPool)(nil)

// Get implements mem.BufferPool: a buffer of length n, from the smallest
// tier that holds it.
func (p *recvPool) Get(n int) *[]byte {
	for i := range p.tiers {
		t := &p.tiers[i]
		if n > t.size {
			continue
		}
		if b, ok := t.pool.Get().(*[]byte); ok {
			*b = (*b)[:n]
			return b
		}
		b := make([]byte, n, t.size)
		return &b
	}
	b := make([]byte, n)
	return &b
}

// Put implements mem.BufferPool: a buffer of one of the tiers' sizes goes
// back to its tier; others (larger than the largest) are let go.
func (p *recvPool) Put(b *[]byte) {
	c := cap(*b)
	for i := range p.tiers {
		if t := &p.tiers[i]; c == t.size {
			t.pool.Put(b)
			return
		}
	}
}
