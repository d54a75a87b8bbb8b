package expr

import (
	"net"
	"slices"
	"time"
)

// Layout gives every attribute of a manifest a slot: a Record holds the
// values of a bag in an array indexed by slot rather than in a map keyed by
// name, and a Program reads them by slot, resolved once when it is compiled.
// A Layout is immutable and safe for concurrent use.
type Layout struct {
	names []string
	types []ValueType
	index map[string]int
}

// NewLayout lays out the attributes of m, in name order.
func NewLayout(m Manifest) *Layout {
	l := &Layout{index: make(map[string]int, len(m))}
	for name := range m {
		l.names = append(l.names, name)
	}
	slices.Sort(l.names)
	for i, name := range l.names {
		l.types = append(l.types, m[name])
		l.index[name] = i
	}
	return l
}

// Slot is the slot of an attribute, or false when the manifest does not
// declare it.
func (l *Layout) Slot(name string) (int, bool) {
	i, ok := l.index[name]
	return i, ok
}

// Len is the number of slots.
func (l *Layout) Len() int { return len(l.names) }

// Name is the attribute of a slot.
func (l *Layout) Name(slot int) string { return l.names[slot] }

// Type is the declared type of a slot.
func (l *Layout) Type(slot int) ValueType { return l.types[slot] }

// Manifest is the manifest the layout was made from.
func (l *Layout) Manifest() Manifest {
	m := make(Manifest, len(l.names))
	for i, n := range l.names {
		m[n] = l.types[i]
	}
	return m
}

// KV is one entry of a STRING_MAP value.
type KV struct{ Key, Value string }

// Value is one typed value: of a Record's slot, or of a Program's result.
// Which fields mean something depends on the type: Str for the string-like
// types; Int for INT64, for DURATION (nanoseconds) and for the seconds of a
// TIMESTAMP, whose nanoseconds are in Nanos; Float for DOUBLE; Bool; IP for
// IP_ADDRESS; Map for STRING_MAP (in wire order; a repeated key's last entry
// is its value).
type Value struct {
	Str   string
	Int   int64
	Nanos int32
	Float float64
	Bool  bool
	IP    []byte
	Map   []KV
}

// Lookup finds key in a STRING_MAP value: the last entry with that key.
func (v *Value) Lookup(key string) (string, bool) {
	for i := len(v.Map) - 1; i >= 0; i-- {
		if v.Map[i].Key == key {
			return v.Map[i].Value, true
		}
	}
	return "", false
}

// Time is a TIMESTAMP value as a time.Time.
func (v *Value) Time() time.Time { return time.Unix(v.Int, int64(v.Nanos)) }

// Interface is v as the interpreter's Eval returns a value of type t (see
// Bag): it allocates, and serves tests and the Mixer-exact encoder.
func (v *Value) Interface(t ValueType) any {
	switch {
	case t.stringLike():
		return v.Str
	case t == Int64:
		return v.Int
	case t == Duration:
		return time.Duration(v.Int)
	case t == Double:
		return v.Float
	case t == Bool:
		return v.Bool
	case t == Timestamp:
		return v.Time()
	case t == IPAddress:
		return net.IP(v.IP)
	case t == StringMap:
		m := make(map[string]string, len(v.Map))
		for _, kv := range v.Map {
			m[kv.Key] = kv.Value
		}
		return m
	}
	return nil
}

// Record is an attribute bag laid out by a Layout: one typed Value per slot
// and a generation mark saying which slots are set. Reset forgets every value
// in constant time, so one Record serves entry after entry without
// allocating. Strings may be views of a received message (they are not
// copied): the Record is valid only while that message is. A Record is not
// safe for concurrent use.
type Record struct {
	layout *Layout
	gen    uint32
	set    []uint32
	vals   []Value
}

// NewRecord makes an empty record for l.
func NewRecord(l *Layout) *Record {
	return &Record{layout: l, gen: 1, set: make([]uint32, l.Len()), vals: make([]Value, l.Len())}
}

// Layout is the record's layout.
func (r *Record) Layout() *Layout { return r.layout }

// Reset makes every slot absent.
func (r *Record) Reset() {
	r.gen++
	if r.gen == 0 { // wrapped: marks of 2^32 resets ago would look current
		clear(r.set)
		r.gen = 1
	}
}

// Has reports whether slot is set.
func (r *Record) Has(slot int) bool { return r.set[slot] == r.gen }

// Value is the value of slot and whether it is set.
func (r *Record) Value(slot int) (*Value, bool) {
	if r.set[slot] != r.gen {
		return nil, false
	}
	return &r.vals[slot], true
}

// slot marks slot set and returns its value for the setter of the slot's
// type to write its fields. The other fields are not cleared (a bag sets
// a score of slots per entry): a slot is only ever read as its declared
// type, through the fields of that type.
func (r *Record) slot(slot int) *Value {
	r.set[slot] = r.gen
	return &r.vals[slot]
}

// SetString sets a string-like slot.
func (r *Record) SetString(slot int, s string) { r.slot(slot).Str = s }

// SetInt sets an INT64 slot.
func (r *Record) SetInt(slot int, i int64) { r.slot(slot).Int = i }

// SetDuration sets a DURATION slot.
func (r *Record) SetDuration(slot int, d time.Duration) { r.slot(slot).Int = int64(d) }

// SetFloat sets a DOUBLE slot.
func (r *Record) SetFloat(slot int, f float64) { r.slot(slot).Float = f }

// SetBool sets a BOOL slot.
func (r *Record) SetBool(slot int, b bool) { r.slot(slot).Bool = b }

// SetTime sets a TIMESTAMP slot from Unix seconds and nanoseconds, which
// need not be normalised (nanoseconds beyond a second carry over).
func (r *Record) SetTime(slot int, sec int64, nsec int64) {
	if nsec < 0 || nsec >= 1e9 {
		sec += nsec / 1e9
		nsec %= 1e9
		if nsec < 0 {
			nsec += 1e9
			sec--
		}
	}
	v := r.slot(slot)
	v.Int, v.Nanos = sec, int32(nsec)
}

// SetIP sets an IP_ADDRESS slot. The bytes are kept, not copied.
func (r *Record) SetIP(slot int, ip []byte) { r.slot(slot).IP = ip }

// MapSlot sets a STRING_MAP slot to an empty map and returns it, so that
// the caller appends entries to its storage (reused from entry to entry).
func (r *Record) MapSlot(slot int) *[]KV {
	v := r.slot(slot)
	v.Map = v.Map[:0]
	return &v.Map
}

// Get implements Bag for the interpreter. It boxes the value (and builds a
// Go map for a STRING_MAP), so it is for tests, tools and the Mixer-exact
// encoder, not for the hot path.
func (r *Record) Get(name string) (any, bool) {
	slot, ok := r.layout.index[name]
	if !ok || r.set[slot] != r.gen {
		return nil, false
	}
	v := &r.vals[slot]
	t := r.layout.types[slot]
	if t == IPAddress {
		return v.IP, true // []byte, as a proxy's attribute
	}
	return v.Interface(t), true
}

// Names lists the set attributes in name order.
func (r *Record) Names() []string {
	var out []string
	for i, n := range r.layout.names {
		if r.set[i] == r.gen {
			out = append(out, n)
		}
	}
	return out
}
