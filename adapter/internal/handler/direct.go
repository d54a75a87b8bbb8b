package handler

import (
	"bytes"
	"slices"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler/convert"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
)

// Direct recording is for instances that rules evaluate in the adapter (the
// Mixer-less mode): they go straight into the handler's batches. Each
// instance of a config is resolved once per handler (Resolve: its metrics,
// and for each of their labels the dimension that fills it); then each
// evaluated instance is recorded as its value and its dimension values
// (Recording.Record). No instance is stored and no label is looked up by
// name: each label value is copied once, into the batch. What is recorded,
// refused, cut and dropped is what Handle records, refuses, cuts and drops
// for the same instances in a HandleMetric request
// (TestRecordingMatchesHandle).

// Target is one instance's metrics in one handler, from Resolve. It stays
// valid as long as the handler: a handler's metrics never change.
type Target struct {
	name    []byte
	err     error
	metrics []targetMetric
	// pairs, for a config without metrics (its implicit metric takes every
	// dimension as a name/value pair): the dimensions by name.
	pairs []int
	keys  [][]byte
}

type targetMetric struct {
	m *metric
	// dims[i] is the dimension that fills label i, -1 when none does (an
	// empty value, as for a dimension a request does not carry).
	dims []int
}

// Resolve finds the metrics of the instance called name whose dimensions,
// as Record will be given their values, are keys. The handler looks an
// instance up as Handle does: by its fully qualified name, then by its
// short name.
func (h *Handler) Resolve(name []byte, keys [][]byte) Target {
	t := Target{name: slices.Clone(name)}
	ms, err := h.lookup(name)
	if err != nil {
		t.err = err
		return t
	}
	for _, m := range ms {
		tm := targetMetric{m: m}
		if m.def.Implicit {
			t.keys = keys
			t.pairs = make([]int, len(keys))
			for i := range t.pairs {
				t.pairs[i] = i
			}
			slices.SortFunc(t.pairs, func(a, b int) int { return bytes.Compare(keys[a], keys[b]) })
		} else {
			tm.dims = make([]int, len(m.def.LabelNames))
			for i, l := range m.def.LabelNames {
				tm.dims[i] = slices.IndexFunc(keys, func(k []byte) bool { return string(k) == l })
			}
		}
		t.metrics = append(t.metrics, tm)
	}
	return t
}

// Recording records one message's instances into a handler's batches:
// Begin, Record for each instance, End. The zero value is ready for Begin;
// a Recording is reused from message to message and keeps its scratch
// memory. It is not safe for concurrent use.
type Recording struct {
	h       *Handler
	batches []*sinks.Batch
	values  [][]byte
	spans   [][2]int
	labels  []byte
	o       Outcome
}

// Begin starts recording into h's batches, stamped now.
func (h *Handler) Begin(r *Recording, now time.Time) {
	r.h, r.o = h, Outcome{}
	r.batches = r.batches[:0]
	for _, q := range h.queues {
		b := q.NewBatch()
		b.Time = now
		r.batches = append(r.batches, b)
	}
}

// Record records one instance of t (resolved in the handler of Begin):
// value is its value and dims the values of the dimensions Resolve was
// given the keys of, in the same order. Like Handle, it refuses (and
// counts) an unknown instance, a value that is not a number and a negative
// increment of a counter, and cuts long label values.
func (r *Recording) Record(t *Target, value handlemetric.Value, dims []handlemetric.Value) {
	o := &r.o
	o.Received++
	if t.err != nil {
		o.reject(RejectUnknownInstance, t.name, t.err.Error())
		return
	}
	if len(t.metrics) == 0 {
		o.reject(RejectUnknownInstance, t.name, "")
		return
	}
	x, isDuration, reason := convert.Number(value)
	if reason != convert.OK {
		o.reject(rejectionOf(reason), t.name, value.Kind.String())
		return
	}
	accepted := false
	for i := range t.metrics {
		tm := &t.metrics[i]
		m := tm.m
		if m.counter && x < 0 {
			o.reject(RejectNegativeCounter, t.name, "")
			continue
		}
		if superseded(m) {
			o.reject(RejectSuperseded, t.name, m.def.Namespace+"_"+m.def.Name)
			continue
		}
		if tm.dims != nil {
			r.add(m, tm.dims, dims, x, isDuration)
			accepted = true
			continue
		}
		addAll(r.batches, m, x, isDuration, r.labelValues(t, dims))
		accepted = true
	}
	if accepted {
		o.Accepted++
	}
}

// add adds a sample of m, whose labels are filled by dims as labelDims says
// (Target.metrics), to the batch of each of its bindings. The label values
// are encoded straight into the first batch and its key copied to the
// others: no list of values is built, since the dimensions of a rule's
// instance are mostly text, used as is.
func (r *Recording) add(m *metric, labelDims []int, dims []handlemetric.Value, x float64, isDuration bool) {
	if len(m.bindings) == 0 {
		return
	}
	h := r.h
	b0 := &m.bindings[0]
	first := r.batches[b0.queue]
	start := first.Start()
	for _, d := range labelDims {
		if d < 0 {
			first.AppendLabel(nil) // an empty value, as for a dimension a request does not carry
			continue
		}
		v := &dims[d]
		if isText(v.Kind) && len(v.Bytes) <= h.maxLabel {
			first.AppendLabel(v.Bytes)
			continue
		}
		r.labels = h.appendLabel(r.labels[:0], 0, *v, &r.o)
		first.AppendLabel(r.labels)
	}
	key := first.End(b0.b, scaled(x, isDuration, b0), start)
	for i := 1; i < len(m.bindings); i++ {
		b := &m.bindings[i]
		r.batches[b.queue].AddKey(b.b, scaled(x, isDuration, b), key)
	}
}

// scaled is x in b's unit: durations are seconds, or what the sink takes.
func scaled(x float64, isDuration bool, b *binding) float64 {
	if isDuration {
		return x * b.b.DurationScale()
	}
	return x
}

// labelValues is Handler.labelValues for an implicit metric's name/value
// pairs, sorted by name, of dimensions given by position.
func (r *Recording) labelValues(t *Target, dims []handlemetric.Value) [][]byte {
	h := r.h
	r.labels = r.labels[:0]
	r.spans = r.spans[:0]
	for _, d := range t.pairs {
		start := len(r.labels)
		r.labels = append(r.labels, t.keys[d]...)
		mid := len(r.labels)
		r.labels = h.appendLabel(r.labels, mid, dims[d], &r.o)
		r.spans = append(r.spans, [2]int{start, mid}, [2]int{mid, len(r.labels)})
	}
	r.values = r.values[:0]
	for _, s := range r.spans {
		r.values = append(r.values, r.labels[s[0]:s[1]])
	}
	return r.values
}

// End hands the batches to the sinks (a full queue drops its batch, and
// says so in the outcome) and returns what was recorded. The handler's
// Done, if it came from the cache, is the caller's to call after End.
func (r *Recording) End() Outcome {
	h := r.h
	for qi, b := range r.batches {
		n := b.Len()
		if !h.queues[qi].Enqueue(b) {
			r.o.addDrop(h.queues[qi].Name(), n)
			h.queues[qi].Recycle(b)
		}
		r.batches[qi] = nil
	}
	r.batches = r.batches[:0]
	r.h = nil
	return r.o
}
