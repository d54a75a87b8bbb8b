// Package loadgen drives an adapter with HandleMetric calls at a set concurrency and rate,
// from a ring of requests encoded once, and measures throughput and latency.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gogo/protobuf/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshmetrics/meshmetrics/adapter/mixerpb/policypb"
	"github.com/meshmetrics/meshmetrics/adapter/rules/conn"
	"github.com/meshmetrics/meshmetrics/adapter/rules/encode"
	"github.com/meshmetrics/meshmetrics/adapter/rules/params"
	"github.com/meshmetrics/meshmetrics/config"
)

// Config describes a load run. Zero values take the defaults noted.
type Config struct {
	// Address of the adapter (required), and how to reach it (plaintext when Auth is nil).
	Address string
	Conn    conn.Options

	// Workers call concurrently, each waiting for its reply before the next call (16).
	Workers int
	// Conns are the HTTP/2 connections the workers share (4).
	Conns int
	// Rate caps requests per second over all workers; RatePerWorker caps each worker. With
	// both, the lower applies. Zero means as fast as replies come.
	Rate, RatePerWorker float64
	// Requests stops the run after this many requests; Duration after this long. With
	// neither, the run lasts 10s; with both, whichever comes first.
	Requests int64
	Duration time.Duration

	// InstancesPerRequest is the number of instances in each call (100).
	InstancesPerRequest int
	// Series is the number of distinct label sets the instances spread over (1000).
	Series int
	// Dimensions is the number of string dimensions per instance (6), named dim0, dim1...
	Dimensions int
	// Ring is the number of distinct requests encoded before the run (64); it grows to cover
	// every series at least once.
	Ring int
	// InstanceName is the instances' name (loadtest.instance.istio-system).
	InstanceName string
	// AdapterConfig is sent with every request. Nil: a meshmetrics config with one COUNTER,
	// load_requests, over the instance and its dimensions, encoded in sorted-key order.
	AdapterConfig *types.Any
	// Seed makes dimension values and dedup_ids reproducible; zero is random.
	Seed uint64
	// RacyDedup reproduces Mixer 1.7's dedup_id race (encode.NewRacyDedup): workers calling
	// at the same moment may share an id. Off, every call gets its own. The summary counts
	// the calls that reused an id.
	RacyDedup bool

	// Progress, when set, receives a progress line about five times a second ("\r"...),
	// for terminals.
	Progress io.Writer
}

func (c *Config) defaults() error {
	if c.Address == "" {
		return errors.New("loadgen: no address")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Workers, 16)
	def(&c.Conns, 4)
	def(&c.InstancesPerRequest, 100)
	def(&c.Series, 1000)
	def(&c.Dimensions, 6)
	def(&c.Ring, 64)
	c.Conns = min(c.Conns, c.Workers)
	if c.Requests <= 0 && c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.InstanceName == "" {
		c.InstanceName = "loadtest.instance.istio-system"
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
	if need := (c.Series + c.InstancesPerRequest - 1) / c.InstancesPerRequest; c.Ring < need {
		c.Ring = need
	}
	if c.Rate < 0 || c.RatePerWorker < 0 || math.IsNaN(c.Rate) || math.IsNaN(c.RatePerWorker) {
		return errors.New("loadgen: rates must be >= 0")
	}
	return nil
}

// interval is the pause between a worker's calls that the rates ask for.
func (c *Config) interval() time.Duration {
	perWorker := math.Inf(1)
	if c.RatePerWorker > 0 {
		perWorker = c.RatePerWorker
	}
	if c.Rate > 0 {
		perWorker = min(perWorker, c.Rate/float64(c.Workers))
	}
	if math.IsInf(perWorker, 1) {
		return 0
	}
	return time.Duration(float64(time.Second) / perWorker)
}

// LabelNames are the dimension names of the generated instances.
func LabelNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "dim" + strconv.Itoa(i)
	}
	return out
}

// DefaultAdapterConfig is the config Run sends when none is given: one meshmetrics COUNTER,
// load_requests, fed by instance with the given label names.
func DefaultAdapterConfig(instance string, labels []string) (*types.Any, error) {
	schema, err := params.Registered("config.proto")
	if err != nil {
		return nil, err
	}
	names := make([]any, len(labels))
	for i, l := range labels {
		names[i] = l
	}
	return schema.AdapterConfig(map[string]any{"metrics": []any{map[string]any{
		"name": "load_requests", "instance_name": instance, "kind": config.Params_MetricInfo_COUNTER.String(), "label_names": names,
	}}})
}

// Ring encodes the distinct request bodies, each without dedup_id (field 3, which comes last
// and is appended per call so that no two calls share one). Instance j of request r has
// series (r*per + j) mod Series: dim0 names the series, the other dimensions vary with it,
// and every value is 1 (int64).
func Ring(c Config, cfg *types.Any) ([][]byte, error) {
	if err := c.defaults(); err != nil {
		return nil, err
	}
	r := rand.New(rand.NewPCG(c.Seed, c.Seed>>1|1))
	labels := LabelNames(c.Dimensions)
	values := make([][]string, c.Series)
	for s := range values {
		values[s] = make([]string, c.Dimensions)
		values[s][0] = "series-" + strconv.Itoa(s)
		for d := 1; d < c.Dimensions; d++ {
			// A few distinct values per dimension, as real label values repeat.
			values[s][d] = fmt.Sprintf("value-%d-%d", d, s%(3+d))
		}
	}
	one := &policypb.Value{Value: &policypb.Value_Int64Value{Int64Value: 1}}
	dimValues := make([][]*policypb.Value, c.Series)
	for s := range dimValues {
		dimValues[s] = make([]*policypb.Value, c.Dimensions)
		for d := range dimValues[s] {
			dimValues[s][d] = &policypb.Value{Value: &policypb.Value_StringValue{StringValue: values[s][d]}}
		}
	}
	ring := make([][]byte, c.Ring)
	for i := range ring {
		insts := make([]*encode.Instance, c.InstancesPerRequest)
		for j := range insts {
			s := (i*c.InstancesPerRequest + j) % c.Series
			inst := &encode.Instance{Name: c.InstanceName, Value: one, Dimensions: make([]encode.Dim, c.Dimensions)}
			for d := range inst.Dimensions {
				inst.Dimensions[d] = encode.Dim{Key: labels[d], Value: dimValues[s][d]}
			}
			encode.Shuffle(inst, r)
			insts[j] = inst
		}
		body, err := encode.Request(insts, cfg, "")
		if err != nil {
			return nil, err
		}
		// Drop the empty dedup_id encode.Request ends with; each call appends its own.
		ring[i] = body[:len(body)-2]
	}
	return ring, nil
}

// Summary is the outcome of a run.
type Summary struct {
	Requests  int64 `json:"requests"`
	Instances int64 `json:"instances"`
	Errors    int64 `json:"errors"`
	// ErrorsByCode counts failed calls by gRPC code name.
	ErrorsByCode       map[string]int64 `json:"errors_by_code"`
	DurationSeconds    float64          `json:"duration_seconds"`
	RequestsPerSecond  float64          `json:"requests_per_second"`
	InstancesPerSecond float64          `json:"instances_per_second"`
	// ReusedDedupIDs counts the calls whose dedup_id an earlier call of the run carried
	// (only with RacyDedup; zero otherwise).
	ReusedDedupIDs int64 `json:"reused_dedup_ids"`
	// Latency of calls, successful or not, in milliseconds.
	Latency Latency `json:"latency_ms"`
	// Settings echo the run's shape.
	Settings Settings `json:"settings"`
}

// Latency quantiles in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// Settings are the effective parameters of a run.
type Settings struct {
	Address             string  `json:"address"`
	Workers             int     `json:"workers"`
	Conns               int     `json:"conns"`
	Rate                float64 `json:"rate,omitempty"`
	RatePerWorker       float64 `json:"rate_per_worker,omitempty"`
	InstancesPerRequest int     `json:"instances_per_request"`
	Series              int     `json:"series"`
	Dimensions          int     `json:"dimensions"`
	Ring                int     `json:"ring"`
	// RequestBytes is the size of one request without its dedup_id.
	RequestBytes int `json:"request_bytes"`
	// RacyDedup: dedup_ids as Mixer 1.7 gives them under load (shared by concurrent calls).
	RacyDedup bool `json:"mixer_dedup_race,omitempty"`
}

type worker struct {
	hist     Histogram
	requests int64
	errors   map[codes.Code]int64
	suffix   []byte
	// With RacyDedup: the ids sent, as a bitmap of offsets from the seed.
	trackIDs bool
	ids      []uint64
	issued   int64
}

// Run encodes the ring, then calls HandleMetric until the count or the duration is reached
// or ctx ends. Calls are unary, one outstanding per worker; a call's latency is measured
// from just before Invoke to its return.
func Run(ctx context.Context, c Config) (*Summary, error) {
	if err := c.defaults(); err != nil {
		return nil, err
	}
	cfg := c.AdapterConfig
	if cfg == nil {
		var err error
		if cfg, err = DefaultAdapterConfig(c.InstanceName, LabelNames(c.Dimensions)); err != nil {
			return nil, err
		}
	}
	ring, err := Ring(c, cfg)
	if err != nil {
		return nil, err
	}
	conns := make([]*grpc.ClientConn, c.Conns)
	for i := range conns {
		o := c.Conn
		o.Address = c.Address
		// Large requests need room in flow control to keep the pipe full.
		o.DialOptions = append(append([]grpc.DialOption(nil), o.DialOptions...),
			grpc.WithInitialWindowSize(4<<20), grpc.WithInitialConnWindowSize(16<<20))
		if conns[i], err = conn.Dial(o); err != nil {
			return nil, err
		}
		defer conns[i].Close()
	}

	// The duration stops new calls; calls in flight finish and count. Only ctx, the caller's,
	// interrupts them.
	run := ctx
	if c.Duration > 0 {
		var cancel context.CancelFunc
		run, cancel = context.WithTimeout(ctx, c.Duration)
		defer cancel()
	}
	var claimed atomic.Int64
	dedup := encode.NewDedup(c.Seed)
	if c.RacyDedup {
		dedup = encode.NewRacyDedup(c.Seed)
	}
	var sent atomic.Int64
	interval := c.interval()
	workers := make([]*worker, c.Workers)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{errors: map[codes.Code]int64{}, suffix: make([]byte, 0, 32), trackIDs: c.RacyDedup}
		workers[i] = w
		cc := conns[i%len(conns)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Workers start spread over one interval, so a capped rate is smooth.
			next := start.Add(time.Duration(int64(interval) * int64(i) / int64(c.Workers)))
			parts := make(conn.Parts, 2)
			for n := i; ; n += c.Workers {
				if c.Requests > 0 && claimed.Add(1) > c.Requests {
					return
				}
				if interval > 0 {
					if wait := time.Until(next); wait > 0 {
						select {
						case <-time.After(wait):
						case <-run.Done():
							return
						}
					}
					next = next.Add(interval)
				}
				if run.Err() != nil {
					return
				}
				w.suffix = protowire.AppendTag(w.suffix[:0], 3, protowire.BytesType)
				id := dedup.NextNumber()
				w.noteID(id - c.Seed)
				w.suffix = appendDecimal(w.suffix, id)
				parts[0], parts[1] = ring[n%len(ring)], w.suffix
				t0 := time.Now()
				err := cc.Invoke(ctx, encode.Path, &parts, &conn.Discard{})
				took := time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						return // the caller stopped the run; this call does not count
					}
					w.errors[status.Code(err)]++
				}
				w.hist.Record(took)
				w.requests++
				sent.Add(1)
			}
		}()
	}
	stopProgress := progress(c, start, &sent)
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()

	s := &Summary{ErrorsByCode: map[string]int64{}, DurationSeconds: elapsed.Seconds(), Settings: Settings{
		Address: c.Address, Workers: c.Workers, Conns: c.Conns, Rate: c.Rate, RatePerWorker: c.RatePerWorker,
		InstancesPerRequest: c.InstancesPerRequest, Series: c.Series, Dimensions: c.Dimensions, Ring: len(ring),
		RequestBytes: len(ring[0]), RacyDedup: c.RacyDedup,
	}}
	if c.RacyDedup {
		s.ReusedDedupIDs = s.countReused(workers)
	}
	var h Histogram
	for _, w := range workers {
		h.Merge(&w.hist)
		s.Requests += w.requests
		for code, n := range w.errors {
			s.ErrorsByCode[code.String()] += n
			s.Errors += n
		}
	}
	s.Instances = s.Requests * int64(c.InstancesPerRequest)
	if elapsed > 0 {
		s.RequestsPerSecond = float64(s.Requests) / elapsed.Seconds()
		s.InstancesPerSecond = float64(s.Instances) / elapsed.Seconds()
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	s.Latency = Latency{P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)), Max: ms(h.Max())}
	return s, nil
}

// noteID records a dedup_id, by its offset from the seed, in the worker's bitmap (RacyDedup
// only): one bit per call of the run, merged at the end to count the distinct ids.
func (w *worker) noteID(offset uint64) {
	if !w.trackIDs {
		return
	}
	word := offset / 64
	for uint64(len(w.ids)) <= word {
		w.ids = append(w.ids, 0)
	}
	w.ids[word] |= 1 << (offset % 64)
	w.issued++
}

// countReused is the number of calls minus the number of distinct ids they carried.
func (s *Summary) countReused(workers []*worker) int64 {
	var merged []uint64
	var issued int64
	for _, w := range workers {
		issued += w.issued
		for len(merged) < len(w.ids) {
			merged = append(merged, 0)
		}
		for i, x := range w.ids {
			merged[i] |= x
		}
	}
	distinct := 0
	for _, x := range merged {
		distinct += bits.OnesCount64(x)
	}
	return issued - int64(distinct)
}

// appendDecimal writes a dedup_id field's length and digits.
func appendDecimal(b []byte, v uint64) []byte {
	var digits [20]byte
	d := strconv.AppendUint(digits[:0], v, 10)
	b = protowire.AppendVarint(b, uint64(len(d)))
	return append(b, d...)
}

// progress draws a progress line on c.Progress until the returned func is called.
func progress(c Config, start time.Time, sent *atomic.Int64) func() {
	return DrawProgress(c.Progress, func() string { return progressLine(c, time.Since(start), sent.Load()) })
}

// DrawProgress redraws line() on w every 200ms until the returned func is
// called, which erases it. A nil w draws nothing.
func DrawProgress(w io.Writer, line func() string) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprint(w, "\r\033[K"+line())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// progressLine renders a bar for the part of the run done, by count or by time.
func progressLine(c Config, elapsed time.Duration, sent int64) string {
	frac := 0.0
	if c.Requests > 0 {
		frac = float64(sent) / float64(c.Requests)
	}
	if c.Duration > 0 {
		frac = max(frac, elapsed.Seconds()/c.Duration.Seconds())
	}
	rate := 0.0
	if elapsed > 0 {
		rate = float64(sent) * float64(c.InstancesPerRequest) / elapsed.Seconds()
	}
	return fmt.Sprintf("%s  %d requests  %.0f instances/s", Bar(frac), sent, rate)
}

// Bar draws the part frac (0 to 1) of a run as a 30-column bar and a
// percentage: "[=======>      ]  25%".
func Bar(frac float64) string {
	frac = max(0, min(frac, 1))
	const width = 30
	filled := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		switch {
		case i < filled:
			bar[i] = '='
		case i == filled:
			bar[i] = '>'
		default:
			bar[i] = ' '
		}
	}
	return fmt.Sprintf("[%s] %3.0f%%", bar, frac*100)
}
