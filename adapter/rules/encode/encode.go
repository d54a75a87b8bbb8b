// Package encode writes HandleMetricRequest bytes laid out as Mixer's dynamic encoder lays
// them out: fields in number order, InstanceMsg.name last, map entries in no fixed order.
package encode

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/gogo/protobuf/types"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
)

// Path is the gRPC method of the metric template, as Mixer derives it from the template's
// descriptor (first service named Handle*, its first method).
const Path = "/metric.HandleMetricService/HandleMetric"

// Field numbers of metric.HandleMetricRequest and metric.InstanceMsg.
const (
	fieldInstances     = 1
	fieldAdapterConfig = 2
	fieldDedupID       = 3

	fieldValue        = 1
	fieldDimensions   = 2
	fieldMRType       = 3
	fieldMRDimensions = 4
	// fieldName reuses the number of the template_variety option; Mixer injects it.
	fieldName = 72295727

	fieldMapKey   = 1
	fieldMapValue = 2
)

// Dim is one map entry of dimensions or monitored_resource_dimensions.
type Dim struct {
	Key   string
	Value *policypb.Value
}

// Instance is one metric instance, built from an instance CR and an attribute bag. Fields
// Mixer would not write (params the instance does not set) are left nil or empty.
type Instance struct {
	// Name is the fully qualified instance name, <name>.instance.<namespace>.
	Name  string
	Value *policypb.Value
	// Dimensions in the order they are written (see Shuffle).
	Dimensions []Dim
	// MonitoredResourceType is written when set.
	MonitoredResourceType *string
	// MonitoredResourceDimensions in the order they are written.
	MonitoredResourceDimensions []Dim
}

// Shuffle reorders the map entries of inst in place. Mixer writes map entries in the order
// Go's map iteration gave when the handler was built, so adapters must not depend on any
// order; sending them shuffled makes a dependence show up in tests.
func Shuffle(inst *Instance, r *rand.Rand) {
	r.Shuffle(len(inst.Dimensions), func(i, j int) { inst.Dimensions[i], inst.Dimensions[j] = inst.Dimensions[j], inst.Dimensions[i] })
	r.Shuffle(len(inst.MonitoredResourceDimensions), func(i, j int) {
		inst.MonitoredResourceDimensions[i], inst.MonitoredResourceDimensions[j] = inst.MonitoredResourceDimensions[j], inst.MonitoredResourceDimensions[i]
	})
}

// Request encodes a HandleMetricRequest: every instance (field 1), then adapter_config
// (field 2) when cfg is not nil, then dedup_id (field 3), as handler.go (encodeRequest)
// writes them. Mixer always writes dedup_id, even when empty.
func Request(instances []*Instance, cfg *types.Any, dedupID string) ([]byte, error) {
	return AppendRequest(nil, instances, cfg, dedupID)
}

// AppendRequest is Request appending to b.
func AppendRequest(b []byte, instances []*Instance, cfg *types.Any, dedupID string) ([]byte, error) {
	var err error
	for _, inst := range instances {
		if b, err = appendInstance(b, inst); err != nil {
			return nil, err
		}
	}
	if cfg != nil {
		raw, err := cfg.Marshal()
		if err != nil {
			return nil, err
		}
		b = protowire.AppendTag(b, fieldAdapterConfig, protowire.BytesType)
		b = protowire.AppendBytes(b, raw)
	}
	b = protowire.AppendTag(b, fieldDedupID, protowire.BytesType)
	b = protowire.AppendString(b, dedupID)
	return b, nil
}

// InstanceBytes encodes one InstanceMsg (without the field-1 key and length around it).
func InstanceBytes(inst *Instance) ([]byte, error) {
	return appendInstanceMsg(nil, inst)
}

func appendInstance(b []byte, inst *Instance) ([]byte, error) {
	msg, err := appendInstanceMsg(nil, inst)
	if err != nil {
		return nil, err
	}
	b = protowire.AppendTag(b, fieldInstances, protowire.BytesType)
	return protowire.AppendBytes(b, msg), nil
}

func appendInstanceMsg(b []byte, inst *Instance) ([]byte, error) {
	var err error
	if inst.Value != nil {
		if b, err = appendValue(b, fieldValue, inst.Value); err != nil {
			return nil, fmt.Errorf("instance %s: value: %w", inst.Name, err)
		}
	}
	if b, err = appendDims(b, fieldDimensions, inst.Dimensions); err != nil {
		return nil, fmt.Errorf("instance %s: %w", inst.Name, err)
	}
	if inst.MonitoredResourceType != nil {
		b = protowire.AppendTag(b, fieldMRType, protowire.BytesType)
		b = protowire.AppendString(b, *inst.MonitoredResourceType)
	}
	if b, err = appendDims(b, fieldMRDimensions, inst.MonitoredResourceDimensions); err != nil {
		return nil, fmt.Errorf("instance %s: %w", inst.Name, err)
	}
	b = protowire.AppendTag(b, fieldName, protowire.BytesType)
	return protowire.AppendString(b, inst.Name), nil
}

func appendDims(b []byte, field protowire.Number, dims []Dim) ([]byte, error) {
	for _, d := range dims {
		entry := protowire.AppendTag(nil, fieldMapKey, protowire.BytesType)
		entry = protowire.AppendString(entry, d.Key)
		var err error
		if d.Value != nil {
			if entry, err = appendValue(entry, fieldMapValue, d.Value); err != nil {
				return nil, fmt.Errorf("dimension %q: %w", d.Key, err)
			}
		}
		b = protowire.AppendTag(b, field, protowire.BytesType)
		b = protowire.AppendBytes(b, entry)
	}
	return b, nil
}

// appendValue writes an istio.policy.v1beta1.Value with its gogo-generated marshaller, the
// code Mixer's valueTypeEncoder uses.
func appendValue(b []byte, field protowire.Number, v *policypb.Value) ([]byte, error) {
	raw := make([]byte, v.Size())
	if _, err := v.MarshalToSizedBuffer(raw); err != nil {
		return nil, err
	}
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, raw), nil
}

// Dedup is a per-handler dedup_id sequence (dynamic/handler.go): a counter seeded at random
// when the handler is built, used then incremented on every call, in decimal. It is safe for
// concurrent use, as the calls of one Report go out in parallel, and by default every call
// gets its own id (one atomic increment).
//
// A real Mixer reads the counter and advances it in two separate steps (h.n.Load(), then
// h.n.Inc()), so calls dispatched at the same moment share an id. NewRacyDedup reproduces
// that race, for tests and for users who want to see what an adapter makes of it.
type Dedup struct {
	next atomic.Uint64
	racy bool
}

// NewDedup seeds a sequence that gives every call its own id.
func NewDedup(seed uint64) *Dedup {
	d := &Dedup{}
	d.next.Store(seed)
	return d
}

// NewRacyDedup seeds a sequence that reads and advances the counter in two steps, as Mixer
// 1.7 does: concurrent calls may share an id.
func NewRacyDedup(seed uint64) *Dedup {
	d := NewDedup(seed)
	d.racy = true
	return d
}

// Next returns the id of the next call.
func (d *Dedup) Next() string {
	return strconv.FormatUint(d.NextNumber(), 10)
}

// NextNumber returns the id of the next call as a number.
func (d *Dedup) NextNumber() uint64 {
	if d.racy {
		id := d.next.Load()
		// Mixer builds the request between the two steps; yielding here widens the
		// window further, so that the race shows within seconds on any machine (far
		// more often than the 0.1% of calls seen from a real Mixer).
		runtime.Gosched()
		d.next.Add(1)
		return id
	}
	return d.next.Add(1) - 1
}

// CanonicalMapOrder rewrites a HandleMetricRequest with the entries of each map field
// (dimensions, monitored_resource_dimensions) sorted by their bytes, leaving everything else
// as it was. Two requests that differ only in map order, which Mixer does not fix, become
// equal, while field order and the position of name stay visible to a byte comparison.
func CanonicalMapOrder(raw []byte) ([]byte, error) {
	var out []byte
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeField(raw)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		field := raw[:n]
		raw = raw[n:]
		if num != fieldInstances || typ != protowire.BytesType {
			out = append(out, field...)
			continue
		}
		_, _, tagLen := protowire.ConsumeTag(field)
		msg, m := protowire.ConsumeBytes(field[tagLen:])
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		canon, err := canonicalInstance(msg)
		if err != nil {
			return nil, fmt.Errorf("instance: %w", err)
		}
		out = protowire.AppendTag(out, fieldInstances, protowire.BytesType)
		out = protowire.AppendBytes(out, canon)
	}
	return out, nil
}

// canonicalInstance sorts each run of consecutive entries of one map field.
func canonicalInstance(msg []byte) ([]byte, error) {
	var out []byte
	var run [][]byte
	runField := protowire.Number(0)
	flush := func() {
		slices.SortFunc(run, bytes.Compare)
		for _, f := range run {
			out = append(out, f...)
		}
		run, runField = run[:0], 0
	}
	for len(msg) > 0 {
		num, _, n := protowire.ConsumeField(msg)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		field := msg[:n]
		msg = msg[n:]
		if num != runField {
			flush()
		}
		if num == fieldDimensions || num == fieldMRDimensions {
			run, runField = append(run, field), num
			continue
		}
		out = append(out, field...)
	}
	flush()
	return out, nil
}
