package otlp

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/series"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
	"github.com/meshmetrics/meshmetrics/config"
)

// Sink is one OTLP destination.
//
// Time: every interval (and on Flush and Close) each series becomes a data
// point stamped with env.Now. Cumulative points start when their series
// was created in this process, so a series that expired and came back, or
// a restarted adapter, starts anew; delta points start where the series'
// previous point ended (or at its creation), so that consecutive points of
// a series cover time without overlap and each sample is in exactly one.
type Sink struct {
	name    string
	cfg     settings
	env     sinks.Env
	agent   string
	headers *headers
	reg     *series.Registry[*state]
	defs    *series.Catalog[*state, *metricInfo]
	sender  *export.Sender[*request]
	client  *http.Client     // http/protobuf
	conn    *grpc.ClientConn // grpc

	remMu   sync.Mutex
	removed []point // series removed since the last export, with what they gathered

	exportMu sync.Mutex // one export at a time, in time order
	lastTime int64      // time of the latest export (Unix ns)
	build    *builder
	scratch  []point
	buckets  []uint64

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func newSink(name string, o *config.OtlpParams, env sinks.Env) (*Sink, error) {
	env = env.WithDefaults()
	cfg, err := settingsOf(o, env.Replica)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", config.ErrInvalid, name, err)
	}
	tlsCfg, err := tlsConfig(o, cfg.endpoint)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", config.ErrInvalid, name, err)
	}
	s := &Sink{name: name, cfg: cfg, env: env, agent: userAgent(), stop: make(chan struct{}), done: make(chan struct{})}
	if s.headers, err = newHeaders(o, env); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", config.ErrInvalid, name, err)
	}
	s.reg = series.New(series.Options[*state]{
		MaxSeries: env.MaxSeries,
		NewState:  func(*series.Family[*state]) *state { return &state{} },
		OnRemove:  s.onRemove,
	})
	s.defs = series.NewCatalog[*state, *metricInfo](s.reg)
	push := s.pushHTTP
	if cfg.protocol == ProtocolGRPC {
		creds := insecure.NewCredentials()
		if tlsCfg != nil {
			creds = credentials.NewTLS(tlsCfg)
		}
		// A lost connection is dialled again within the retry backoff's
		// bounds, not gRPC's default (up to two minutes): a collector
		// that restarts is written to as soon as it is back.
		reconnect := backoff.Config{BaseDelay: cfg.retryMin, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.retryMax}
		s.conn, err = grpc.NewClient(cfg.endpoint.target, grpc.WithTransportCredentials(creds), grpc.WithUserAgent(s.agent),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnect, MinConnectTimeout: cfg.timeout}))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", config.ErrInvalid, name, err)
		}
		push = s.pushGRPC
	} else {
		s.client = export.NewHTTPClient(tlsCfg)
	}
	s.sender, err = export.New(export.Settings{
		Sink:     name,
		Capacity: cfg.queueSize,
		// One worker: points of a series reach the receiver in time order
		// (a Prometheus receiver refuses older samples).
		Workers:   1,
		Spool:     env.Spool,
		Timeout:   cfg.timeout,
		Retry:     export.RetrySettings{MinBackoff: cfg.retryMin, MaxBackoff: cfg.retryMax, MaxElapsed: cfg.retryMaxDur},
		Telemetry: env.Telemetry(),
	}, push, spoolCodec)
	if err != nil {
		s.closeTransport()
		return nil, err
	}
	env.Metrics.InitDropped(name, telemetry.DropPartialRejected)
	s.build = newBuilder(cfg, version(s.agent), s.sender.Put)
	go s.loop()
	env.Log.WithFields(logrus.Fields{"sink": name, "protocol": cfg.protocol, "interval": cfg.interval,
		"temporality": o.Temporality.String()}).Info("otlp sink started")
	return s, nil
}

func version(agent string) string { return agent[len("meshmetrics/"):] }

// Name implements sinks.Sink; it is the Factory's key, which holds no secret.
func (s *Sink) Name() string { return s.name }

// Reload implements sinks.Reloader: the header files are re-read now.
func (s *Sink) Reload() error { return s.headers.reload() }

// Bind implements sinks.Sink. Definitions are keyed by their OTLP name, so
// two that map to one name supersede each other instead of mixing.
func (s *Sink) Bind(m *sinks.Metric) (sinks.Binding, error) {
	switch m.Kind {
	case sinks.Gauge, sinks.Counter, sinks.Distribution:
	default:
		return nil, fmt.Errorf("otlp: metric %q has unsupported kind %s", m.Name, m.Kind)
	}
	name := MetricName(m)
	if name == "" {
		return nil, fmt.Errorf("otlp: metric %q in namespace %q gives no valid OTLP name", m.Name, m.Namespace)
	}
	scale := sinks.DurationScale(m.DurationUnit, config.DurationUnit_SECONDS)
	f, err := s.defs.Bind(name, []string{name}, m, scale, func(*series.Family[*state]) *metricInfo { return newMetricInfo(m) })
	if err != nil {
		return nil, err
	}
	return f, nil
}

// Unbind implements sinks.Sink. The last binding of a definition removes
// its series; what they gathered goes out with the next export.
func (s *Sink) Unbind(b sinks.Binding) { s.defs.Unbind(b) }

// Consume implements sinks.Sink: samples update the series; the next
// export sends them.
func (s *Sink) Consume(b *sinks.Batch) {
	at := b.Time.UnixNano()
	d := s.reg.Apply(b, func(f *series.Family[*state], ser *series.Series[*state], v float64) {
		st := ser.State
		if st.info == nil {
			info, ok := s.defs.Info(f)
			if !ok {
				return // cannot happen: Bind stores the info before returning the family
			}
			st.info = info
			st.attrs = attributes(info, ser.Labels)
			st.attrsSize = attributesSize(st.attrs)
			st.start = at
		}
		st.record(st.info, v)
		st.pending++
	})
	series.Report(s.env, s.name, d)
	s.env.Metrics.SinkSeries.WithLabelValues(s.name).Set(float64(s.reg.Len()))
}

// onRemove runs under the registry lock: what the series gathered since
// its last point goes out with the next export, stamped now.
func (s *Sink) onRemove(_ *series.Family[*state], ser *series.Series[*state], _ series.RemoveReason) {
	st := ser.State
	if st.info == nil || (s.cfg.delta && st.pending == 0) {
		return
	}
	p := s.snapshot(st, s.env.Now().UnixNano(), nil)
	s.remMu.Lock()
	s.removed = append(s.removed, p)
	s.remMu.Unlock()
}

// snapshot copies st into a point ending at t (buckets into arena when
// given) and, for delta, starts st's next point at t. Under the registry
// lock.
func (s *Sink) snapshot(st *state, t int64, arena *[]uint64) point {
	t = max(t, st.start+1) // a point ends after it starts
	p := point{info: st.info, attrs: st.attrs, attrsSize: st.attrsSize, start: st.start, time: t, acc: st.acc, instances: 1}
	if st.buckets != nil {
		if arena != nil {
			i := len(*arena)
			*arena = append(*arena, st.buckets...)
			p.buckets = (*arena)[i:len(*arena):len(*arena)]
		} else {
			p.buckets = append([]uint64(nil), st.buckets...)
		}
	}
	if s.cfg.delta {
		p.instances = st.pending
		st.reset()
		st.start = t
	}
	st.pending = 0
	return p
}

// export sends a data point for every series: all of them (cumulative), or
// those that changed since their previous point (delta), plus the series
// removed since the last export.
func (s *Sink) export(now time.Time) {
	s.exportMu.Lock()
	defer s.exportMu.Unlock()
	t := max(now.UnixNano(), s.lastTime+1)
	s.lastTime = t

	// Take the removed series before reading the live ones: a series
	// removed in between is then live in this export and removed in the
	// next one, never the other way round.
	s.remMu.Lock()
	points := append(s.scratch[:0], s.removed...)
	s.removed = nil
	s.remMu.Unlock()

	arena := s.buckets[:0]
	s.reg.Each(func(_ *series.Family[*state], ser *series.Series[*state]) {
		st := ser.State
		if st.info == nil || (s.cfg.delta && st.pending == 0) {
			return
		}
		points = append(points, s.snapshot(st, t, &arena))
	})
	// The arena may have moved while growing: the points keep what they
	// copied (their slices point into the older arrays, which stay valid).
	sortPoints(points)
	for i := range points {
		s.build.add(&points[i])
	}
	s.build.flush()
	clear(points) // keep the buffers, not the attributes
	s.scratch, s.buckets = points[:0], arena[:0]
}

// Flush implements sinks.Sink: it exports every series now and waits until
// the send queue is empty or ctx ends.
func (s *Sink) Flush(ctx context.Context) error {
	s.export(s.env.Now())
	return s.sender.Drain(ctx)
}

// Close implements sinks.Sink: a final export, then the queue is drained
// within ctx; what cannot be sent is counted as dropped (or stays in the
// spool).
func (s *Sink) Close(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.export(s.env.Now())
		if e := s.sender.Close(ctx); e != nil {
			err = fmt.Errorf("otlp sink %s: not everything was sent before the shutdown timeout: %w", s.name, e)
		}
		s.env.Metrics.SinkSeries.DeleteLabelValues(s.name)
		s.closeTransport()
	})
	return err
}

func (s *Sink) closeTransport() {
	if s.conn != nil {
		_ = s.conn.Close()
	}
	if s.client != nil {
		s.client.CloseIdleConnections()
	}
}

func (s *Sink) loop() {
	defer close(s.done)
	exportT := time.NewTicker(s.cfg.interval)
	defer exportT.Stop()
	expireT := time.NewTicker(s.env.Tick)
	defer expireT.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-expireT.C:
			if s.reg.Expire(s.env.Now()) > 0 {
				s.env.Metrics.SinkSeries.WithLabelValues(s.name).Set(float64(s.reg.Len()))
			}
		case <-exportT.C:
			s.export(s.env.Now())
		}
	}
}

// Len is the number of series held.
func (s *Sink) Len() int { return s.reg.Len() }
