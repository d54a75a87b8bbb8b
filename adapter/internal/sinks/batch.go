package sinks

import (
	"encoding/binary"
	"time"
)

// Batch is the samples of one HandleMetric call for one sink. Label values
// are copied into one arena, so that a batch owns its data after the request
// buffer is released and costs no allocation per sample once warm.
type Batch struct {
	// Time is when the request was received.
	Time    time.Time
	Samples []Sample
	arena   []byte

	// Control markers that travel through a Queue in order with the data.
	flushed chan struct{}
	unbind  Binding
	stop    bool
}

// Sample is one value of one series.
type Sample struct {
	Binding Binding
	Value   float64
	start   uint32
	end     uint32
}

// Add appends a sample whose labels are values (one per label name of the
// metric, or name/value pairs for an implicit metric).
func (b *Batch) Add(binding Binding, value float64, values [][]byte) {
	start := len(b.arena)
	for _, v := range values {
		b.arena = binary.AppendUvarint(b.arena, uint64(len(v)))
		b.arena = append(b.arena, v...)
	}
	b.Samples = append(b.Samples, Sample{Binding: binding, Value: value, start: uint32(start), end: uint32(len(b.arena))})
}

// Start begins a sample whose label values are then appended one by one
// with AppendLabel and which End adds: the labels go straight into the
// arena, without a list of values to build first. It returns where the
// sample starts, for End.
func (b *Batch) Start() int { return len(b.arena) }

// AppendLabel appends the next label value of the sample begun by Start.
func (b *Batch) AppendLabel(v []byte) {
	b.arena = binary.AppendUvarint(b.arena, uint64(len(v)))
	b.arena = append(b.arena, v...)
}

// End adds the sample begun at start (from Start) and returns its key.
func (b *Batch) End(binding Binding, value float64, start int) []byte {
	b.Samples = append(b.Samples, Sample{Binding: binding, Value: value, start: uint32(start), end: uint32(len(b.arena))})
	return b.arena[start:]
}

// AddKey appends a sample whose label values are already encoded as key
// (another batch's Key or End): one copy for a metric bound to several
// sinks.
func (b *Batch) AddKey(binding Binding, value float64, key []byte) {
	start := len(b.arena)
	b.arena = append(b.arena, key...)
	b.Samples = append(b.Samples, Sample{Binding: binding, Value: value, start: uint32(start), end: uint32(len(b.arena))})
}

// Key is the sample's encoded label values: unique per label set of a metric,
// and usable as a map key with string(key) without allocating.
func (b *Batch) Key(s *Sample) []byte { return b.arena[s.start:s.end] }

// Len is the number of samples.
func (b *Batch) Len() int { return len(b.Samples) }

// Reset empties the batch and keeps its capacity.
func (b *Batch) Reset() {
	clear(b.Samples) // drop Binding references for the GC
	b.Samples = b.Samples[:0]
	b.arena = b.arena[:0]
	b.Time = time.Time{}
}

// DecodeKey splits an encoded key (Batch.Key) into its label values. The
// strings alias key, so a series that keeps key keeps its labels for free.
func DecodeKey(key string) []string {
	var out []string
	for len(key) > 0 {
		var n uint64
		w := 0
		for shift := 0; w < len(key); shift += 7 {
			c := key[w]
			w++
			n |= uint64(c&0x7f) << shift
			if c < 0x80 {
				break
			}
		}
		if uint64(len(key)-w) < n {
			return out // cannot happen for keys built by Add
		}
		out = append(out, key[w:w+int(n)])
		key = key[w+int(n):]
	}
	return out
}

// EncodeKey builds the key that Add would build for values; tests and sinks
// that synthesise series use it.
func EncodeKey(values ...string) string {
	var b []byte
	for _, v := range values {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return string(b)
}
