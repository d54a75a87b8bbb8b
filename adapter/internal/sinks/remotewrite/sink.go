package remotewrite

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/series"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/cumulative"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/promnaming"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/remotewrite/prompb"
	"github.com/meshmetrics/meshmetrics/config"
)

// StaleNaN is the stale marker of Prometheus: the NaN with these bits means
// "this series has ended" and is used for nothing else.
const StaleNaN uint64 = 0x7ff0000000000002

// metricInfo is what every series of one metric definition shares.
type metricInfo struct {
	names  promnaming.Names
	kind   sinks.Kind
	bounds []float64
	// les are the bucket bounds as Prometheus writes them in `le`, "+Inf"
	// last.
	les []string
}

// state is one series: its value and its labels.
type state struct {
	cumulative.Value
	info *metricInfo
	// base is the series' label set without __name__ (and le): the metric's
	// non-empty labels and the external labels, sorted by name. Built on the
	// first sample.
	base []prompb.Label
}

// Sink is one remote-write destination.
type Sink struct {
	name     string
	env      sinks.Env
	rw       *config.RemoteWrite
	external []prompb.Label
	reg      *series.Registry[*state]
	queue    *export.Sender[*request]
	client   *http.Client
	auth     *auth

	// defs are the metric definitions, with what their series share.
	defs *series.Catalog[*state, *metricInfo]

	remMu   sync.Mutex
	removed []point // series removed since the last push, with their final values

	pushMu sync.Mutex
	lastTS int64 // timestamp (ms) of the latest sample pushed
	build  builder

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newSink(name string, rw *config.RemoteWrite, env sinks.Env) (*Sink, error) {
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Tick <= 0 {
		env.Tick = time.Second
	}
	tlsCfg, err := tlsConfig(rw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	s := &Sink{name: name, env: env, rw: rw,
		stop: make(chan struct{}), done: make(chan struct{})}
	if s.auth, err = newAuth(rw, env); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for k, v := range rw.ExternalLabels {
		s.external = append(s.external, prompb.Label{Name: k, Value: v})
	}
	if rw.ReplicaLabel != "" && env.Replica != "" {
		s.external = append(s.external, prompb.Label{Name: rw.ReplicaLabel, Value: env.Replica})
	}
	sortLabels(s.external)
	s.reg = series.New(series.Options[*state]{
		MaxSeries: env.MaxSeries,
		NewState:  func(f *series.Family[*state]) *state { return &state{Value: cumulative.NewValue(f.Metric)} },
		OnRemove:  s.onRemove,
	})
	s.defs = series.NewCatalog[*state, *metricInfo](s.reg)
	s.client = export.NewHTTPClient(tlsCfg)
	s.queue, err = export.New(export.Settings{
		Sink:     name,
		Capacity: int(rw.Capacity),
		// One worker: samples of a series must reach the receiver in time
		// order, and every request holds all series.
		Workers:   1,
		Spool:     env.Spool,
		Timeout:   rw.Timeout,
		Retry:     export.RetrySettings{MinBackoff: rw.MinBackoff, MaxBackoff: rw.MaxBackoff, MaxElapsed: rw.MaxRetryElapsed},
		Telemetry: env.Telemetry(),
	}, s.post, spoolCodec)
	if err != nil {
		return nil, err
	}
	s.build = builder{max: int(rw.MaxSamplesPerSend), put: s.queue.Put}
	go s.loop()
	return s, nil
}

func sortLabels(ls []prompb.Label) {
	sort.Slice(ls, func(i, j int) bool { return ls[i].Name < ls[j].Name })
}

// Name implements sinks.Sink.
func (s *Sink) Name() string { return s.name }

// Reload implements sinks.Reloader: the password or bearer token file is
// re-read now.
func (s *Sink) Reload() error { return s.auth.reload() }

// Bind implements sinks.Sink.
func (s *Sink) Bind(m *sinks.Metric) (sinks.Binding, error) {
	names, err := promnaming.Resolve(m)
	if err != nil {
		return nil, err
	}
	scale := sinks.DurationScale(m.DurationUnit, config.DurationUnit_SECONDS)
	f, err := s.defs.Bind(names.Name, names.Exposed, m, scale, func(*series.Family[*state]) *metricInfo {
		info := &metricInfo{names: names, kind: m.Kind, bounds: m.Buckets}
		if m.Kind == sinks.Distribution {
			for _, b := range m.Buckets {
				info.les = append(info.les, formatLe(b))
			}
			info.les = append(info.les, "+Inf")
		}
		return info
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// formatLe writes a bucket bound the way client_golang's text exposition
// does, so that scraped and pushed buckets carry the same `le`.
func formatLe(b float64) string {
	if math.IsInf(b, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(b, 'g', -1, 64)
}

// Unbind implements sinks.Sink. The last binding of a definition removes its
// series, which get stale markers in the next push.
func (s *Sink) Unbind(b sinks.Binding) { s.defs.Unbind(b) }

// Consume implements sinks.Sink: samples update the cumulative values; they
// are sent by the next push.
func (s *Sink) Consume(b *sinks.Batch) {
	d := s.reg.Apply(b, func(f *series.Family[*state], ser *series.Series[*state], v float64) {
		st := ser.State
		if st.info == nil {
			info, ok := s.defs.Info(f)
			if !ok {
				return // cannot happen: Bind stores the info before returning the family
			}
			st.info = info
			st.base = s.baseLabels(st.info, ser.Labels)
		}
		st.Record(st.info.kind, st.info.bounds, v)
	})
	series.Report(s.env, s.name, d)
	if m := s.env.Metrics; m != nil {
		m.SinkSeries.WithLabelValues(s.name).Set(float64(s.reg.Len()))
	}
}

// baseLabels builds a series' labels: non-empty metric labels (valid UTF-8)
// and the external labels, sorted by name. A metric label wins over an
// external label of the same name (Check refuses such configs anyway).
func (s *Sink) baseLabels(info *metricInfo, values []string) []prompb.Label {
	out := make([]prompb.Label, 0, len(values)+len(s.external))
	for i, name := range info.names.Labels {
		if i < len(values) && values[i] != "" {
			out = append(out, prompb.Label{Name: name, Value: promnaming.LabelValue(values[i])})
		}
	}
	n := len(out)
	for _, e := range s.external {
		dup := false
		for _, l := range out[:n] {
			if l.Name == e.Name {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, e)
		}
	}
	sortLabels(out)
	return out
}

// onRemove runs under the registry lock: it keeps the series' final value
// for the next push, which sends it and then a stale marker.
func (s *Sink) onRemove(_ *series.Family[*state], ser *series.Series[*state], _ series.RemoveReason) {
	st := ser.State
	if st.info == nil {
		return
	}
	p := point{info: st.info, base: st.base, sum: st.Sum, count: st.Count}
	if st.info.kind == sinks.Distribution {
		p.buckets = st.AppendCumulative(nil)
	}
	s.remMu.Lock()
	s.removed = append(s.removed, p)
	s.remMu.Unlock()
}

// Flush implements sinks.Sink: it pushes every series now and waits until
// the send queue is empty or ctx ends.
func (s *Sink) Flush(ctx context.Context) error {
	s.push(s.env.Now(), false)
	return s.queue.Drain(ctx)
}

// Close implements sinks.Sink: a final push (values, then stale markers for
// every series, since this sink will write them no more), then the queue
// is drained within ctx; what cannot be sent is counted as dropped.
func (s *Sink) Close(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.push(s.env.Now(), true)
		err = s.queue.Close(ctx)
		// A config change builds a new sink: this one's gauge must not
		// linger with its last count, nor its connections stay open.
		if s.env.Metrics != nil {
			s.env.Metrics.SinkSeries.DeleteLabelValues(s.name)
		}
		s.client.CloseIdleConnections()
	})
	return err
}

func (s *Sink) loop() {
	defer close(s.done)
	pushT := time.NewTicker(s.rw.Interval)
	defer pushT.Stop()
	expireT := time.NewTicker(s.env.Tick)
	defer expireT.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-expireT.C:
			if s.reg.Expire(s.env.Now()) > 0 && s.env.Metrics != nil {
				s.env.Metrics.SinkSeries.WithLabelValues(s.name).Set(float64(s.reg.Len()))
			}
		case <-pushT.C:
			s.push(s.env.Now(), false)
		}
	}
}

// Len is the number of series held.
func (s *Sink) Len() int { return s.reg.Len() }
