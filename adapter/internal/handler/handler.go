// Package handler builds one handler per distinct handler config, keeps
// them in a bounded cache keyed by a digest of the config bytes, and turns
// the instances of a HandleMetric request into samples for the sinks the
// config names.
package handler

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler/convert"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/dedup"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/config"
)

// Digest identifies a handler config: SHA-256 of its type URL and bytes.
// Mixer encodes a params document the same way every time (sorted keys), so
// equal configs give equal digests.
type Digest [sha256.Size]byte

// DigestOf computes the digest of an adapter_config.
func DigestOf(a handlemetric.Any) Digest {
	h := sha256.New()
	if a.Present {
		h.Write([]byte{1})
		h.Write(a.TypeURL)
		h.Write([]byte{0})
		h.Write(a.Value)
	}
	var d Digest
	h.Sum(d[:0])
	return d
}

// String is a short hex form for logs.
func (d Digest) String() string { return fmt.Sprintf("%x", d[:6]) }

// Handler is one built handler config.
type Handler struct {
	Digest Digest
	Params *config.Params

	queues     []*sinks.Queue
	byName     map[string][]*metric
	implicit   bool
	implicitMu sync.RWMutex
	implicitM  map[string][]*metric // by instance name, for a config without metrics
	maxLabel   int
	dedup      *dedup.Window
	release    func(*sinks.Queue)
	onClose    func(Digest)

	lastUsed atomic.Int64
	refs     atomic.Int32
	evicted  atomic.Bool
	close    sync.Once
	scratch  sync.Pool
}

// metric is one metric of the config with its bindings in each sink.
type metric struct {
	def      *sinks.Metric
	labelIdx map[string]int
	counter  bool
	bindings []binding
}

type binding struct {
	queue int
	b     sinks.Binding
}

// maxImplicitMetrics bounds the metrics a config without a metrics list can
// create, one per instance name.
const maxImplicitMetrics = 1000

// build makes a handler from normalized params. On error every binding made
// so far is released.
func build(d Digest, p *config.Params, deps *Deps) (h *Handler, err error) {
	h = &Handler{
		Digest:    d,
		Params:    p,
		byName:    map[string][]*metric{},
		implicit:  len(p.Metrics) == 0,
		implicitM: map[string][]*metric{},
		maxLabel:  int(p.Limits.MaxLabelValueLength),
		dedup:     deps.Dedup,
		onClose:   deps.OnClose,
		release:   deps.Sinks.Release,
	}
	h.scratch.New = func() any { return &scratch{} }
	defer func() {
		if err != nil {
			h.unbindAll()
		}
	}()
	uses, err := resolve(p, deps.Factories)
	if err != nil {
		return h, err
	}
	for _, u := range uses {
		q, err := deps.Sinks.Acquire(u.Key, func() (sinks.Sink, error) { return u.Factory.New(p) })
		if err != nil {
			return h, invalid(err)
		}
		h.queues = append(h.queues, q)
	}
	var errs config.FieldErrors
	for i, def := range MetricsOf(p) {
		m, err := h.bind(def)
		if err != nil {
			errs = append(errs, config.FieldError{Field: fmt.Sprintf("metrics[%d]", i), Message: err.Error()})
			continue
		}
		name := p.Metrics[i].InstanceName
		h.byName[name] = append(h.byName[name], m)
	}
	if len(errs) > 0 {
		return h, errs
	}
	return h, nil
}

// Sinks are the names of the sinks the handler feeds, in factory order.
func (h *Handler) Sinks() []string {
	out := make([]string, len(h.queues))
	for i, q := range h.queues {
		out[i] = q.Name()
	}
	return out
}

// Check runs on normalized params what building a handler checks besides
// config.Normalize: each backend's block and rules (sinks.Resolve, then
// every used backend's Check), without building a sink.
func Check(p *config.Params, factories []sinks.Factory) error {
	_, err := resolve(p, factories)
	return err
}

// MetricsOf resolves the metrics of normalized params, in their order.
func MetricsOf(p *config.Params) []*sinks.Metric {
	expiry, check := time.Duration(0), time.Duration(0)
	if ep := p.MetricsExpirationPolicy; ep != nil {
		expiry, check = ep.MetricsExpiryDuration, ep.ExpiryCheckIntervalDuration
	}
	out := make([]*sinks.Metric, 0, len(p.Metrics))
	for _, mi := range p.Metrics {
		def := &sinks.Metric{
			Namespace:    mi.Namespace,
			Name:         mi.Name,
			Description:  mi.Description,
			Kind:         kindOf(mi.Kind),
			LabelNames:   append([]string(nil), mi.LabelNames...),
			DurationUnit: mi.DurationUnit,
			MaxSeries:    int(p.Limits.MaxSeriesPerMetric),
			Expiry:       expiry,
			ExpiryCheck:  check,
		}
		if def.Kind == sinks.Distribution {
			def.Buckets, _ = config.BucketBounds(mi.Buckets) // validated by Normalize
		}
		out = append(out, def)
	}
	return out
}

func kindOf(k config.Params_MetricInfo_Kind) sinks.Kind {
	switch k {
	case config.Params_MetricInfo_COUNTER:
		return sinks.Counter
	case config.Params_MetricInfo_DISTRIBUTION:
		return sinks.Distribution
	}
	return sinks.Gauge
}

// bind registers def with every sink of the handler.
func (h *Handler) bind(def *sinks.Metric) (*metric, error) {
	m := &metric{def: def, labelIdx: make(map[string]int, len(def.LabelNames)), counter: def.Kind == sinks.Counter}
	for i, l := range def.LabelNames {
		m.labelIdx[l] = i
	}
	for qi, q := range h.queues {
		b, err := q.Sink().Bind(def)
		if err != nil {
			for _, done := range m.bindings {
				h.queues[done.queue].Sink().Unbind(done.b)
			}
			return nil, fmt.Errorf("sink %s: %w", q.Name(), err)
		}
		m.bindings = append(m.bindings, binding{queue: qi, b: b})
	}
	return m, nil
}

// lookup finds the metrics of an instance: by its fully qualified name, then
// by its short name (a config may name instances either way).
func (h *Handler) lookup(name []byte) ([]*metric, error) {
	if h.implicit {
		return h.implicitMetric(name)
	}
	if ms, ok := h.byName[string(name)]; ok {
		return ms, nil
	}
	return h.byName[string(config.ShortInstanceName(name))], nil
}

// implicitMetric binds, on first sight, the metric of an instance of a
// config without a metrics list: named after the instance, every dimension a
// label. Implicit metrics are summarised like a distribution (Librato's own
// way with raw measurements). It returns the metric as a one-element list,
// kept, so that a lookup allocates nothing.
func (h *Handler) implicitMetric(name []byte) ([]*metric, error) {
	h.implicitMu.RLock()
	ms, ok := h.implicitM[string(name)]
	h.implicitMu.RUnlock()
	if ok {
		return ms, nil
	}
	h.implicitMu.Lock()
	defer h.implicitMu.Unlock()
	if ms, ok := h.implicitM[string(name)]; ok {
		return ms, nil
	}
	if len(h.implicitM) >= maxImplicitMetrics {
		return nil, fmt.Errorf("more than %d instance names for a config without a metrics list", maxImplicitMetrics)
	}
	short := config.ShortInstanceName(string(name))
	def := &sinks.Metric{Namespace: "", Name: short, Description: short, Kind: sinks.Distribution, Implicit: true,
		MaxSeries: int(h.Params.Limits.MaxSeriesPerMetric)}
	m, err := h.bind(def)
	if err != nil {
		return nil, err
	}
	ms = []*metric{m}
	h.implicitM[string(name)] = ms
	return ms, nil
}

// scratch is the per-request working memory, pooled per handler.
type scratch struct {
	inst    handlemetric.Instance
	batches []*sinks.Batch
	values  [][]byte
	spans   [][2]int
	labels  []byte
}

// Instances is what Handle records: the instances of a HandleMetric request
// read in place. (Instances that rules evaluate in the adapter go through
// a Recording, direct.go.)
type Instances interface {
	NumInstances() int
	// Instance reads instance i into in, reusing in's storage.
	Instance(i int, in *handlemetric.Instance) error
}

// Handle records the instances of req. It never blocks on a sink.
func (h *Handler) Handle(req *handlemetric.Request, now time.Time) Outcome {
	o := Outcome{Received: req.NumInstances()}
	var dedupKey, content uint64
	if h.dedup != nil && len(req.DedupID) > 0 {
		dedupKey = h.dedup.Key(h.Digest[:], req.DedupID)
		if h.dedup.Deduplicates() {
			content = req.ContentHash(h.dedup.Seed())
		}
		v := h.dedup.Observe(dedupKey, content, now)
		o.ReusedID = v.Reused
		if v.Duplicate {
			o.Duplicate = true
			return o
		}
	}
	h.recordAll(req, now, &o)
	if o.Malformed != nil && h.dedup != nil && len(req.DedupID) > 0 {
		h.dedup.Forget(dedupKey, content)
	}
	return o
}

func (h *Handler) recordAll(src Instances, now time.Time, o *Outcome) {
	sc := h.scratch.Get().(*scratch)
	defer h.scratch.Put(sc)
	sc.batches = sc.batches[:0]
	for _, q := range h.queues {
		b := q.NewBatch()
		b.Time = now
		sc.batches = append(sc.batches, b)
	}

	for i := 0; i < src.NumInstances(); i++ {
		if err := src.Instance(i, &sc.inst); err != nil {
			// A corrupt request is refused whole, before anything is recorded.
			for qi, b := range sc.batches {
				h.queues[qi].Recycle(b)
			}
			*o = Outcome{Received: o.Received, ReusedID: o.ReusedID, Malformed: err}
			return
		}
		h.record(&sc.inst, sc, o)
	}

	for qi, b := range sc.batches {
		n := b.Len()
		if !h.queues[qi].Enqueue(b) {
			o.addDrop(h.queues[qi].Name(), n)
			h.queues[qi].Recycle(b)
		}
	}
}

func (h *Handler) record(in *handlemetric.Instance, sc *scratch, o *Outcome) {
	metrics, err := h.lookup(in.Name)
	if err != nil {
		o.reject(RejectUnknownInstance, in.Name, err.Error())
		return
	}
	if len(metrics) == 0 {
		o.reject(RejectUnknownInstance, in.Name, "")
		return
	}
	x, isDuration, reason := convert.Number(in.Value)
	if reason != convert.OK {
		o.reject(rejectionOf(reason), in.Name, in.Value.Kind.String())
		return
	}
	accepted := false
	for _, m := range metrics {
		if m.counter && x < 0 {
			o.reject(RejectNegativeCounter, in.Name, "")
			continue
		}
		if superseded(m) {
			o.reject(RejectSuperseded, in.Name, m.def.Namespace+"_"+m.def.Name)
			continue
		}
		addAll(sc.batches, m, x, isDuration, h.labelValues(m, in, sc, o))
		accepted = true
	}
	if accepted {
		o.Accepted++
	}
}

// addAll adds a sample of m whose label values are values to the batch of
// each of m's bindings.
func addAll(batches []*sinks.Batch, m *metric, x float64, isDuration bool, values [][]byte) {
	for i := range m.bindings {
		b := &m.bindings[i]
		batches[b.queue].Add(b.b, scaled(x, isDuration, b), values)
	}
}

func superseded(m *metric) bool {
	for _, b := range m.bindings {
		if b.b.Superseded() {
			return true
		}
	}
	return false
}

// labelValues returns the label values of in for m: one per label name
// (missing dimensions empty, others ignored), or for an implicit metric the
// name/value pairs of all dimensions sorted by name.
func (h *Handler) labelValues(m *metric, in *handlemetric.Instance, sc *scratch, o *Outcome) [][]byte {
	sc.labels = sc.labels[:0]
	if m.def.Implicit {
		// slices.SortFunc, not sort.Slice: the latter allocates per call.
		slices.SortFunc(in.Dimensions, func(a, b handlemetric.Dimension) int { return bytes.Compare(a.Key, b.Key) })
		dims := in.Dimensions
		sc.values = sc.values[:0]
		sc.spans = sc.spans[:0]
		for _, d := range dims {
			start := len(sc.labels)
			sc.labels = append(sc.labels, d.Key...)
			mid := len(sc.labels)
			sc.labels = h.appendLabel(sc.labels, mid, d.Value, o)
			sc.spans = append(sc.spans, [2]int{start, mid}, [2]int{mid, len(sc.labels)})
		}
		for _, s := range sc.spans {
			sc.values = append(sc.values, sc.labels[s[0]:s[1]])
		}
		return sc.values
	}
	n := len(m.def.LabelNames)
	if cap(sc.values) < n {
		sc.values = make([][]byte, n)
		sc.spans = make([][2]int, n)
	}
	sc.values = sc.values[:n]
	sc.spans = sc.spans[:n]
	for i := range sc.spans {
		sc.spans[i] = [2]int{-1, -1}
		sc.values[i] = nil
	}
	names := m.def.LabelNames
	for k, d := range in.Dimensions {
		// Dimensions that come in the metric's label order need no map
		// lookup; others (Mixer's, in no fixed order) fall back to it.
		i := k
		if k >= len(names) || names[k] != string(d.Key) {
			var ok bool
			if i, ok = m.labelIdx[string(d.Key)]; !ok {
				continue
			}
		}
		if isText(d.Value.Kind) && len(d.Value.Bytes) <= h.maxLabel {
			// Text needs no conversion: point at the request bytes.
			sc.values[i] = d.Value.Bytes
			continue
		}
		start := len(sc.labels)
		sc.labels = h.appendLabel(sc.labels, start, d.Value, o)
		sc.spans[i] = [2]int{start, len(sc.labels)}
	}
	for i, s := range sc.spans {
		if s[0] >= 0 {
			sc.values[i] = sc.labels[s[0]:s[1]]
		}
	}
	return sc.values
}

func isText(k handlemetric.Kind) bool {
	return k == handlemetric.KindString || k == handlemetric.KindDNSName || k == handlemetric.KindEmail || k == handlemetric.KindURI
}

// appendLabel appends v's label text, cut to the handler's maximum length at
// a UTF-8 boundary (and counted).
func (h *Handler) appendLabel(dst []byte, start int, v handlemetric.Value, o *Outcome) []byte {
	dst = convert.AppendLabel(dst, v)
	if len(dst)-start <= h.maxLabel {
		return dst
	}
	o.Truncated++
	end := start + h.maxLabel
	for end > start && !utf8.RuneStart(dst[end]) {
		end--
	}
	return dst[:end]
}

func rejectionOf(r convert.Reason) Rejection {
	switch r {
	case convert.MissingValue:
		return RejectMissingValue
	case convert.NonFinite:
		return RejectNonFinite
	}
	return RejectNotNumeric
}

// acquire and done count the requests using h, so that it is closed only
// when none does.
func (h *Handler) acquire(now time.Time) {
	h.refs.Add(1)
	h.lastUsed.Store(now.UnixNano())
}

// Done ends a request's use of h (from Cache.Get).
func (h *Handler) Done() {
	if h.refs.Add(-1) == 0 && h.evicted.Load() {
		h.closeNow()
	}
}

func (h *Handler) evict() {
	h.evicted.Store(true)
	if h.refs.Load() == 0 {
		h.closeNow()
	}
}

func (h *Handler) closeNow() {
	h.close.Do(func() {
		go func() {
			h.unbindAll()
			if h.onClose != nil {
				h.onClose(h.Digest)
			}
		}()
	})
}

// unbindAll releases every binding behind the samples already queued, then
// the handler's reference to each sink.
func (h *Handler) unbindAll() {
	release := func(m *metric) {
		for _, b := range m.bindings {
			h.queues[b.queue].Unbind(b.b)
		}
	}
	for _, ms := range h.byName {
		for _, m := range ms {
			release(m)
		}
	}
	h.implicitMu.Lock()
	for _, ms := range h.implicitM {
		release(ms[0])
	}
	h.implicitMu.Unlock()
	for _, q := range h.queues {
		h.release(q)
	}
}
