package mixerless

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/meshmetrics/meshmetrics/adapter/internal/handler"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/attrmap"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/envoyals/logentry"
	"github.com/meshmetrics/meshmetrics/adapter/internal/ingest/mixer/handlemetric"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
	"github.com/meshmetrics/meshmetrics/adapter/rules/dispatch"
	"github.com/meshmetrics/meshmetrics/adapter/rules/expr"
)

// RuntimeOptions configure a Runtime.
type RuntimeOptions struct {
	// ConfigDir is the directory of handlers, instances and rules.
	ConfigDir string
	Config    Options
	Cache     *handler.Cache
	Telemetry *telemetry.Metrics
	Metrics   *Metrics
	Log       *logrus.Logger
	Limiter   *logging.Limiter
	Now       func() time.Time
	// ForwardQueue is how many HandleMetric calls may wait for each handler
	// of another adapter; beyond, calls are dropped and counted.
	ForwardQueue int
	// MaxEntriesPerMessage caps the entries of one StreamAccessLogsMessage;
	// a bigger message is skipped whole and counted.
	MaxEntriesPerMessage int
}

// Runtime evaluates the current config against access-log messages and
// reloads it when its directory changes. It is safe for concurrent use:
// each stream calls Entries from its own goroutine.
type Runtime struct {
	o       RuntimeOptions
	current atomic.Pointer[active]
	// workers is a free list of working memory, one per concurrent stream at
	// most: unlike a sync.Pool, the GC does not empty it, so a stream's
	// steady state allocates nothing.
	workers chan *worker

	// received are the EntriesReceived counters by protocol and api, looked
	// up once rather than for every message.
	received    [2][2]prometheus.Counter
	mu          sync.Mutex // serialises reloads
	stamp       string
	lastErr     error
	lastErrAt   time.Time
	lastOK      time.Time
	closed      bool
	forwarderWG sync.WaitGroup
}

// active is a config in use with its forwarders. Processing a message holds
// its read lock; retiring it takes the write lock, so that a message that
// began on it finishes on it.
type active struct {
	cfg     *Config
	fwd     []*forwarder
	mu      sync.RWMutex
	retired bool
}

// NewRuntime loads the config directory; an invalid one is an error.
func NewRuntime(o RuntimeOptions) (*Runtime, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ForwardQueue <= 0 {
		o.ForwardQueue = 1000
	}
	if o.MaxEntriesPerMessage <= 0 {
		o.MaxEntriesPerMessage = 10000
	}
	r := &Runtime{o: o, workers: make(chan *worker, maxIdleWorkers)}
	for p, name := range []string{"http", "tcp"} {
		for api := range 2 {
			r.received[p][api] = o.Metrics.EntriesReceived.WithLabelValues(name, logentry.API(api).String())
		}
	}
	if err := r.Reload(); err != nil {
		return nil, fmt.Errorf("config directory %s: %w", o.ConfigDir, err)
	}
	return r, nil
}

// fingerprint names every YAML file of dir with its size and modification
// time: a change of any of them is a change of config.
func fingerprint(dir string) string {
	var parts []string
	_ = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			// An unreadable entry is part of the state: its recovery is a change.
			parts = append(parts, path+":error")
			return nil //nolint:nilerr // keep walking: the error is recorded in the fingerprint
		}
		if e.IsDir() && path != dir && crd.KubernetesInternalDir(e.Name()) {
			return filepath.SkipDir // read through the links, as crd.Load does
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
			// A linked file (a mounted ConfigMap's) is named with its target,
			// which moves to a new directory on every update.
			target, _ := filepath.EvalSymlinks(path)
			parts = append(parts, fmt.Sprintf("%s:%s:%d:%d", path, target, st.Size(), st.ModTime().UnixNano()))
		}
		return nil
	})
	slices.Sort(parts)
	return strings.Join(parts, "\n")
}

// Reload loads and compiles the config directory and, when it is valid as
// a whole, makes it current; otherwise the current config stays and the
// error is returned, counted and logged.
func (r *Runtime) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamp := fingerprint(r.o.ConfigDir)
	err := r.load()
	r.stamp = stamp
	m := r.o.Metrics
	if err != nil {
		m.ConfigReloads.WithLabelValues("failure").Inc()
		m.LastReloadOK.Set(0)
		r.lastErr, r.lastErrAt = err, r.o.Now()
		r.o.Log.WithField("dir", r.o.ConfigDir).Error("config directory refused, the last good config keeps running: " + err.Error())
		return err
	}
	m.ConfigReloads.WithLabelValues("success").Inc()
	m.LastReloadOK.Set(1)
	r.lastOK, r.lastErr = r.o.Now(), nil
	m.LastReloadSuccess.Set(float64(r.lastOK.UnixNano()) / 1e9)
	return nil
}

func (r *Runtime) load() error {
	if r.closed {
		return errors.New("runtime closed")
	}
	store, err := LoadStore(r.o.ConfigDir)
	if err != nil {
		return err
	}
	cfg, err := Compile(store, r.o.Config)
	if err != nil {
		return err
	}
	a := &active{cfg: cfg}
	for _, rh := range cfg.remote {
		f := newForwarder(rh, r.o.ForwardQueue, r.o.Metrics, r.o.Limiter)
		r.forwarderWG.Add(1)
		go func() {
			defer r.forwarderWG.Done()
			f.run()
		}()
		a.fwd = append(a.fwd, f)
	}
	r.o.Metrics.handlerSeries(cfg)
	for _, w := range cfg.Warnings() {
		r.o.Log.Warn(w)
	}
	r.o.Log.WithField("dir", r.o.ConfigDir).Info("config loaded: " + cfg.Summary())
	if old := r.current.Swap(a); old != nil {
		go old.retire()
	}
	return nil
}

// retire waits for the messages in flight on a, then lets its forwarders
// send what they hold and closes its connections.
func (a *active) retire() {
	a.mu.Lock()
	a.retired = true
	a.mu.Unlock()
	for _, f := range a.fwd {
		f.close()
	}
	for _, f := range a.fwd {
		<-f.done
	}
	_ = a.cfg.Close()
}

// Watch reloads the config when a file of its directory changes, checking
// every interval until ctx ends. A broken edit is logged once (per change).
func (r *Runtime) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.mu.Lock()
			changed := fingerprint(r.o.ConfigDir) != r.stamp
			r.mu.Unlock()
			if changed {
				_ = r.Reload() //nolint:contextcheck // a reload outlives no call: its forwarders are bounded by Close
			}
		}
	}
}

// HandlerOf names the handler CR of the current config whose params have
// digest d, and where it is (file:line): the adapter's handler logs, which
// know a config by its digest, name it with this.
func (r *Runtime) HandlerOf(d handler.Digest) (key, source string, ok bool) {
	a := r.current.Load()
	if a == nil {
		return "", "", false
	}
	for _, lh := range a.cfg.local {
		if lh.digest == d {
			return lh.key, lh.source, true
		}
	}
	return "", "", false
}

// Status is one line for /readyz: the config in use and the last failure.
func (r *Runtime) Status() (ok bool, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.current.Load()
	s := fmt.Sprintf("config %s loaded at %s: %s", r.o.ConfigDir, r.lastOK.UTC().Format(time.RFC3339), a.cfg.Summary())
	if r.lastErr != nil {
		return false, s + fmt.Sprintf("; the last reload, at %s, failed and was not applied: %v", r.lastErrAt.UTC().Format(time.RFC3339), r.lastErr)
	}
	return true, s
}

// Close retires the current config: its forwarders send what they hold
// (until ctx ends) and its connections close.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	a := r.current.Load()
	r.mu.Unlock()
	done := make(chan struct{})
	go func() {
		a.retire()
		r.forwarderWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("calls to other adapters not sent at the shutdown timeout: %w", ctx.Err())
	}
}

func (r *Runtime) acquire() *active {
	for {
		a := r.current.Load()
		a.mu.RLock()
		if !a.retired {
			return a
		}
		a.mu.RUnlock()
		if r.current.Load() == a { // closed: nothing current
			return nil
		}
	}
}

// maxIdleWorkers bounds the working memory kept between messages.
const maxIdleWorkers = 64

func (r *Runtime) putWorker(w *worker) {
	select {
	case r.workers <- w:
	default: // more streams than kept workers: let this one go
	}
}

// worker is the per-goroutine working memory of Entries.
type worker struct {
	cfg     *Config
	builder *attrmap.Builder
	entry   logentry.Entry
	local   []localRecording
	remote  []*dispatch.Call
	// dims holds the emitted dimensions of the instance being recorded.
	dims []handlemetric.Value
	// discard receives dimensions evaluated only for their errors.
	discard handlemetric.Value
	counts  [2][2]int // received, by protocol (http, tcp) and api (v2, v3)
}

// localRecording is a meshmetrics handler's share of one message: its
// handler, acquired from the cache on the message's first instance for it
// and released at the end, and the recording of the instances into its
// batches. Its instances' targets are resolved once per handler and kept
// from message to message.
type localRecording struct {
	begun bool
	h     *handler.Handler
	rec   handler.Recording
	// refused counts the instances built while the handler's config was
	// refused.
	refused  int
	err      error
	targetsH *handler.Handler
	targets  []handler.Target
	// dispatched is the handler's InstancesDispatched counter.
	dispatched prometheus.Counter
}

func (r *Runtime) worker(cfg *Config) *worker {
	var w *worker
	select {
	case w = <-r.workers:
	default:
		w = &worker{}
	}
	if w.cfg != cfg {
		w.cfg, w.builder = cfg, cfg.mapper.NewBuilder()
		w.local = make([]localRecording, len(cfg.local))
		for i, lh := range cfg.local {
			w.local[i].dispatched = r.o.Metrics.InstancesDispatched.WithLabelValues(lh.key)
		}
		w.remote = make([]*dispatch.Call, len(cfg.remote))
	}
	return w
}

// record evaluates instance in of local handler lh against rec and records
// it into the handler's batches.
func (r *Runtime) record(w *worker, lh *localHandler, in *instance, rec *expr.Record, now time.Time) error {
	value, err := w.eval(in, rec)
	if err != nil {
		return err
	}
	lr := &w.local[lh.index]
	if !lr.begun {
		lr.begun = true
		lr.h, lr.err = r.o.Cache.GetByDigest(lh.digest, lh.any)
		if lr.err == nil {
			if lr.targetsH != lr.h {
				lr.resolve(lh)
			}
			lr.h.Begin(&lr.rec, now)
		}
	}
	if lr.h == nil {
		lr.refused++
		return nil
	}
	lr.rec.Record(&lr.targets[in.target], value, w.dims)
	return nil
}

// resolve resolves the instances of lh in the handler just acquired.
func (lr *localRecording) resolve(lh *localHandler) {
	lr.targetsH = lr.h
	lr.targets = lr.targets[:0]
	for _, in := range lh.instances {
		lr.targets = append(lr.targets, lr.h.Resolve(in.name, in.keys))
	}
}

// finish ends the message's recordings: the batches go to the sinks and
// the handlers back to the cache. It runs deferred, so that a panic does
// not keep a handler acquired.
func (r *Runtime) finish(w *worker) {
	for i := range w.local {
		lr := &w.local[i]
		if !lr.begun {
			continue
		}
		lh := w.cfg.local[i]
		if lr.h != nil {
			o := lr.rec.End()
			lr.h.Done()
			r.account(lr, lh, &o)
		} else if lr.refused > 0 {
			r.o.Metrics.Skipped.WithLabelValues(SkipBadHandlerConfig).Add(float64(lr.refused))
			r.o.Limiter.Log(logrus.ErrorLevel, "als-handler:"+lh.key, logrus.Fields{"handler": lh.digest.String(), "handler_cr": lh.key, "source": lh.source},
				"instances not dispatched: handler config refused: "+lr.err.Error())
		}
		lr.begun, lr.h, lr.err, lr.refused = false, nil, nil, 0
	}
}

// Entries evaluates the rules against every entry of msg and dispatches the
// instances: one batch per meshmetrics handler, one HandleMetric call per
// other handler, as Mixer dispatches one Report. It never waits on a sink
// or another adapter.
func (r *Runtime) Entries(msg *logentry.Message, api logentry.API) {
	m := r.o.Metrics
	n := msg.Len()
	if n == 0 {
		return
	}
	if n > r.o.MaxEntriesPerMessage {
		m.Skipped.WithLabelValues(SkipTooManyEntries).Add(float64(n))
		r.o.Limiter.Log(logrus.WarnLevel, "als-too-many-entries", logrus.Fields{"entries": n, "max": r.o.MaxEntriesPerMessage},
			"access-log message skipped: too many entries (--als-max-entries-per-message)")
		return
	}
	a := r.acquire()
	if a == nil {
		return
	}
	defer a.mu.RUnlock()
	cfg := a.cfg
	w := r.worker(cfg)
	defer r.putWorker(w)
	defer r.finish(w)
	now := r.o.Now()
	var malformed, matchErrors, instanceErrors, bags int
	debug := r.o.Log.IsLevelEnabled(logrus.DebugLevel)
	for i := 0; i < n; i++ {
		if err := msg.EntryNeed(i, &w.entry, cfg.need); err != nil {
			malformed++
			r.o.Limiter.Log(logrus.WarnLevel, "als-malformed-entry", nil, "access-log entry skipped: "+logging.Truncate(err.Error(), logging.MaxMessage))
			continue
		}
		p := 0
		if w.entry.Protocol == logentry.ProtocolTCP {
			p = 1
		}
		w.counts[p][api]++
		w.builder.Build(&w.entry)
		bags++
		rec := w.builder.Record
		for _, ru := range cfg.rules {
			if !cfg.inScope(ru, rec) {
				continue
			}
			ok, err := ru.match.EvalBool(rec)
			if err != nil {
				matchErrors++
				if debug { // counted always; described only when asked (an expected event, one per entry)
					r.o.Limiter.Log(logrus.DebugLevel, "als-match:"+ru.key, logrus.Fields{"rule": ru.key},
						"match failed to evaluate (no match, as in Mixer): "+err.Error())
				}
				continue
			}
			if !ok {
				continue
			}
			for _, act := range ru.actions {
				for _, in := range act.instances {
					if act.local != nil {
						if err := r.record(w, act.local, in, rec, now); err != nil {
							instanceErrors++
							r.logInstanceError(in, err)
						}
						continue
					}
					enc, err := dispatch.BuildInstance(in.ri, rec)
					if err != nil {
						instanceErrors++
						r.logInstanceError(in, err)
						continue
					}
					c := w.remote[act.remote.index]
					if c == nil {
						c = &dispatch.Call{Handler: act.remote.h}
						w.remote[act.remote.index] = c
					}
					c.Instances = append(c.Instances, enc)
				}
			}
		}
	}
	r.flushCounts(w, malformed, matchErrors, instanceErrors, bags)
	for i, c := range w.remote {
		if c != nil && len(c.Instances) > 0 {
			r.forward(cfg, a.fwd[i], c)
		}
		w.remote[i] = nil
	}
}

func (r *Runtime) logInstanceError(in *instance, err error) {
	if !r.o.Log.IsLevelEnabled(logrus.DebugLevel) {
		return // counted; described only at debug level, since it can happen for every entry
	}
	r.o.Limiter.Log(logrus.DebugLevel, "als-instance:"+in.ri.Key(), logrus.Fields{"instance": in.ri.Key()},
		"instance skipped (as in Mixer): "+err.Error())
}

func (r *Runtime) flushCounts(w *worker, malformed, matchErrors, instanceErrors, bags int) {
	m := r.o.Metrics
	for p := range w.counts {
		for api, c := range w.counts[p] {
			if c > 0 {
				r.received[p][api].Add(float64(c))
				w.counts[p][api] = 0
			}
		}
	}
	if bags > 0 {
		m.BagsBuilt.Add(float64(bags))
	}
	if malformed > 0 {
		m.Skipped.WithLabelValues(SkipMalformedEntry).Add(float64(malformed))
	}
	if matchErrors > 0 {
		m.Skipped.WithLabelValues(SkipMatchError).Add(float64(matchErrors))
	}
	if instanceErrors > 0 {
		m.Skipped.WithLabelValues(SkipInstanceError).Add(float64(instanceErrors))
	}
}

// inScope is Mixer's rule scoping: rules of the default namespace see every
// bag, others only bags whose identity namespace (destination.namespace for
// inbound reports, source.namespace for outbound ones) is theirs.
func (c *Config) inScope(ru *rule, rec *expr.Record) bool {
	if ru.namespace == c.defaultNamespace {
		return true
	}
	kind := "inbound"
	if c.kindSlot >= 0 {
		if v, ok := rec.Value(c.kindSlot); ok {
			kind = v.Str
		}
	}
	slot := -1
	switch kind {
	case "inbound":
		slot = c.destNSSlot
	case "outbound":
		slot = c.srcNSSlot
	}
	ns := ""
	if slot >= 0 {
		if v, ok := rec.Value(slot); ok {
			ns = v.Str
		}
	}
	return ru.namespace == ns
}

// eval evaluates an instance with the typed programs: its value, and into
// w.dims its emitted dimensions, in the order of in.keys. Each dimension is
// evaluated in its slot rather than returned and appended: at two dozen
// dimensions per entry, copying them was a tenth of the mode's CPU.
func (w *worker) eval(in *instance, rec *expr.Record) (handlemetric.Value, error) {
	var value handlemetric.Value
	if in.value != nil {
		if err := evalInto(in.value, rec, &value); err != nil {
			return value, fmt.Errorf("instance %s: value: %w", in.ri.Key(), err)
		}
	}
	n := len(in.keys)
	if cap(w.dims) < n {
		w.dims = make([]handlemetric.Value, n)
	}
	w.dims = w.dims[:n]
	j := 0
	for i := range in.dims {
		d := &in.dims[i]
		if !d.eval {
			continue
		}
		dst := &w.discard
		if d.emit {
			dst = &w.dims[j]
			j++
		}
		if err := evalInto(d.p, rec, dst); err != nil {
			return value, fmt.Errorf("instance %s: dimensions: %s: %w", in.ri.Key(), d.key, err)
		}
	}
	return value, nil
}

// evalInto evaluates p into dst, the istio.policy.v1beta1.Value member
// Mixer's encoder picks for its type, as the handler reads it from a
// request. The types rules mostly use take the typed short cuts.
func evalInto(p *expr.Program, rec *expr.Record, dst *handlemetric.Value) error {
	switch p.Type() {
	case expr.String:
		s, err := p.EvalString(rec)
		*dst = handlemetric.Value{Kind: handlemetric.KindString, Bytes: bytesOf(s)}
		return err
	case expr.Int64:
		i, err := p.EvalInt(rec)
		*dst = handlemetric.Value{Kind: handlemetric.KindInt64, Int: i}
		return err
	}
	v, err := p.Eval(rec)
	*dst = toValue(&v, p.Type())
	return err
}

func bytesOf(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// toValue is the istio.policy.v1beta1.Value member Mixer's encoder picks for
// a value of type t, as the handler reads it from a request.
func toValue(v *expr.Value, t expr.ValueType) handlemetric.Value {
	switch t {
	case expr.String:
		return handlemetric.Value{Kind: handlemetric.KindString, Bytes: bytesOf(v.Str)}
	case expr.Int64:
		return handlemetric.Value{Kind: handlemetric.KindInt64, Int: v.Int}
	case expr.Double:
		return handlemetric.Value{Kind: handlemetric.KindDouble, Float: v.Float}
	case expr.Bool:
		out := handlemetric.Value{Kind: handlemetric.KindBool}
		if v.Bool {
			out.Int = 1
		}
		return out
	case expr.Timestamp:
		return handlemetric.Value{Kind: handlemetric.KindTimestamp, Int: v.Int, Nanos: v.Nanos}
	case expr.Duration:
		d := time.Duration(v.Int)
		return handlemetric.Value{Kind: handlemetric.KindDuration, Int: int64(d / time.Second), Nanos: int32(d % time.Second)}
	case expr.IPAddress:
		return handlemetric.Value{Kind: handlemetric.KindIPAddress, Bytes: v.IP}
	case expr.EmailAddress:
		return handlemetric.Value{Kind: handlemetric.KindEmail, Bytes: bytesOf(v.Str)}
	case expr.DNSName:
		return handlemetric.Value{Kind: handlemetric.KindDNSName, Bytes: bytesOf(v.Str)}
	case expr.URI:
		return handlemetric.Value{Kind: handlemetric.KindURI, Bytes: bytesOf(v.Str)}
	}
	return handlemetric.Value{}
}

// account counts what a handler did with a message's instances.
func (r *Runtime) account(lr *localRecording, lh *localHandler, o *handler.Outcome) {
	m := r.o.Metrics
	if o.Accepted > 0 {
		lr.dispatched.Add(float64(o.Accepted))
	}
	for reason, c := range o.Rejected {
		if c > 0 {
			m.Skipped.WithLabelValues(handler.Rejection(reason).Reason()).Add(float64(c))
		}
	}
	if o.Truncated > 0 && r.o.Telemetry != nil {
		r.o.Telemetry.LabelsTruncated.Add(float64(o.Truncated))
	}
	for sink, c := range o.Dropped {
		m.Skipped.WithLabelValues(SkipQueueFull).Add(float64(c))
		if r.o.Telemetry != nil {
			r.o.Telemetry.Dropped(sink, telemetry.DropQueueFull, c)
		}
	}
	if err := o.Err(); err != nil {
		r.o.Limiter.Log(logrus.WarnLevel, "als-outcome:"+lh.key, logrus.Fields{"handler": lh.key}, err.Error())
	}
}

// forward encodes a call as Mixer does (its dedup_id, map entries shuffled)
// and queues it for the handler's sender.
func (r *Runtime) forward(cfg *Config, f *forwarder, c *dispatch.Call) {
	n := len(c.Instances)
	_, req, err := cfg.dispatch.Encode(c)
	if err != nil {
		r.o.Metrics.Skipped.WithLabelValues(SkipInstanceError).Add(float64(n))
		r.o.Limiter.Log(logrus.WarnLevel, "als-encode:"+f.key, logrus.Fields{"handler": f.key}, "encoding a HandleMetric call: "+err.Error())
		return
	}
	if !f.enqueue(req, n) {
		r.o.Metrics.Skipped.WithLabelValues(SkipForwardQueueFull).Add(float64(n))
		r.o.Limiter.Log(logrus.WarnLevel, "als-forward-full:"+f.key, logrus.Fields{"handler": f.key},
			"calls to another adapter dropped: its queue is full (--als-forward-queue)")
	}
}

// forwarder sends one handler's calls, one at a time, in order.
type forwarder struct {
	key     string
	h       *dispatch.Handler
	ch      chan call
	done    chan struct{}
	ok, bad prometheus.Counter
	limiter *logging.Limiter
}

type call struct {
	req []byte
	n   int
}

func newForwarder(rh *remoteHandler, capacity int, m *Metrics, limiter *logging.Limiter) *forwarder {
	return &forwarder{key: rh.key, h: rh.h, ch: make(chan call, capacity), done: make(chan struct{}), limiter: limiter,
		ok: m.InstancesForwarded.WithLabelValues(rh.key, "ok"), bad: m.InstancesForwarded.WithLabelValues(rh.key, "error")}
}

func (f *forwarder) enqueue(req []byte, n int) bool {
	select {
	case f.ch <- call{req: req, n: n}:
		return true
	default:
		return false
	}
}

func (f *forwarder) close() { close(f.ch) }

func (f *forwarder) run() {
	defer close(f.done)
	for c := range f.ch {
		// The forwarder outlives the message that queued the call; each call
		// is bounded by the handler's timeout, or this one.
		ctx, cancel := context.WithTimeout(context.Background(), defaultForwardTimeout)
		err := f.h.Invoke(ctx, c.req)
		cancel()
		if err != nil {
			f.bad.Add(float64(c.n))
			f.limiter.Log(logrus.WarnLevel, "als-forward:"+f.key, logrus.Fields{"handler": f.key, "address": f.h.Address},
				"HandleMetric call to another adapter failed (dropped, as Mixer does): "+err.Error())
			continue
		}
		f.ok.Add(float64(c.n))
	}
}

// defaultForwardTimeout bounds a call to another adapter whose handler sets
// no connection.timeout, so that a hung adapter cannot hold its queue.
const defaultForwardTimeout = 30 * time.Second
