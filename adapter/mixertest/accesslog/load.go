package accesslog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest/loadgen"
)

// LoadOptions configure Load.
type LoadOptions struct {
	// Conn carries every stream; with Conns, stream i uses Conns[i % len]
	// instead (each Envoy has its own connection).
	Conn  *grpc.ClientConn
	Conns []*grpc.ClientConn
	// Method is MethodV3 (default) or MethodV2.
	Method string
	// Messages are sent round-robin, each stream starting at its own offset.
	// EntriesPerMessage is their entry count; EntryCounts, when set, gives
	// each message's count instead.
	Messages          [][]byte
	EntriesPerMessage int
	EntryCounts       []int
	// Streams is the number of concurrent streams (Envoys), default 4.
	Streams int
	// Duration bounds the run; MaxMessages, when set, bounds it too. With
	// neither, the run lasts 10s.
	Duration    time.Duration
	MaxMessages int64
	// Rate caps the messages per second over all streams; zero sends as fast
	// as the server reads (a client stream has no reply per message: gRPC's
	// flow control holds the sender back when the server lags).
	Rate float64
	// MessagesPerStream, when set, ends each stream after that many
	// messages and opens another; zero keeps one stream per worker for the
	// whole run, as Envoy does.
	MessagesPerStream int64
	// Progress, when set, receives a progress line about five times a second
	// ("\r"...), for terminals.
	Progress io.Writer
}

// LoadResult is what Load sent. Messages and entries count only the
// streams the server answered OK, which it does once it has processed
// every message of the stream; the messages of a stream that failed are
// Unconfirmed (some may have been processed).
type LoadResult struct {
	Messages    int64 `json:"messages"`
	Entries     int64 `json:"entries"`
	Unconfirmed int64 `json:"unconfirmed_messages"`
	// Streams is the number of streams opened; Errors the streams that
	// failed (to open, or later), by gRPC code name in ErrorsByCode.
	Streams      int64            `json:"streams"`
	Errors       int64            `json:"errors"`
	ErrorsByCode map[string]int64 `json:"errors_by_code"`

	Elapsed           time.Duration `json:"-"`
	DurationSeconds   float64       `json:"duration_seconds"`
	MessagesPerSecond float64       `json:"messages_per_second"`
	EntriesPerSecond  float64       `json:"entries_per_second"`
	// SendLatency is the time each message took to hand to gRPC, in
	// milliseconds: near zero while the adapter keeps up, the wait for
	// flow-control credit when it lags (an Envoy then buffers, and drops
	// past its buffer). CloseLatency is the time from the end of a stream
	// to the server's answer: the time to process what was still queued.
	SendLatency  loadgen.Latency `json:"send_latency_ms"`
	CloseLatency loadgen.Latency `json:"close_latency_ms"`
}

// maxOpenFailures is how many times in a row a stream may fail to open
// before its worker gives up: Envoy would retry for ever, a load run has
// nothing to measure then.
const maxOpenFailures = 5

type loadWorker struct {
	send, close         loadgen.Histogram
	messages, entries   int64
	unconfirmed         int64
	streams             int64
	errors              map[codes.Code]int64
	firstErr            map[codes.Code]error
	consecutiveOpenErrs int
}

func (w *loadWorker) fail(err error) {
	c := status.Code(err)
	w.errors[c]++
	if w.firstErr[c] == nil {
		w.firstErr[c] = err
	}
}

// Load streams pre-encoded messages, then closes every stream and waits for
// the answers, so that every entry counted was processed when it returns.
// A stream that fails is counted and replaced, as Envoy reconnects. The
// result is complete even when the error, which joins the first error of
// each gRPC code, is not nil.
func Load(ctx context.Context, o LoadOptions) (LoadResult, error) {
	if o.Method == "" {
		o.Method = MethodV3
	}
	if o.Streams <= 0 {
		o.Streams = 4
	}
	if len(o.Messages) == 0 {
		return LoadResult{}, errors.New("accesslog: no messages to send")
	}
	if len(o.Conns) == 0 {
		if o.Conn == nil {
			return LoadResult{}, errors.New("accesslog: no connection")
		}
		o.Conns = []*grpc.ClientConn{o.Conn}
	}
	if o.EntryCounts != nil && len(o.EntryCounts) != len(o.Messages) {
		return LoadResult{}, errors.New("accesslog: EntryCounts must give one count per message")
	}
	if o.Rate < 0 || math.IsNaN(o.Rate) {
		return LoadResult{}, errors.New("accesslog: the rate must be >= 0")
	}
	if o.Duration <= 0 && o.MaxMessages <= 0 {
		o.Duration = 10 * time.Second
	}
	entriesOf := func(i int) int64 {
		if o.EntryCounts != nil {
			return int64(o.EntryCounts[i])
		}
		return int64(o.EntriesPerMessage)
	}
	run := ctx
	if o.Duration > 0 {
		var cancel context.CancelFunc
		run, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(o.Streams) / o.Rate)
	}
	var claimed, sent atomic.Int64
	// claim takes a message of the count, unclaim gives it back.
	claim := func() bool {
		if o.MaxMessages > 0 && claimed.Add(1) > o.MaxMessages {
			claimed.Add(-1)
			return false
		}
		return true
	}
	unclaim := func() {
		if o.MaxMessages > 0 {
			claimed.Add(-1)
		}
	}
	workers := make([]*loadWorker, o.Streams)
	start := time.Now()
	var wg sync.WaitGroup
	for s := range workers {
		w := &loadWorker{errors: map[codes.Code]int64{}, firstErr: map[codes.Code]error{}}
		workers[s] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := start.Add(time.Duration(int64(interval) * int64(s) / int64(o.Streams)))
			backoff := 50 * time.Millisecond
			i := s
			for run.Err() == nil && w.consecutiveOpenErrs < maxOpenFailures {
				// The stream's first message is claimed before the stream is
				// opened, so that no stream opens for nothing.
				if !claim() {
					return
				}
				// The stream lives past the run's end, to be closed cleanly:
				// only the caller's ctx aborts it.
				st, err := Open(ctx, o.Conns[s%len(o.Conns)], o.Method)
				if err != nil {
					unclaim()
					w.fail(err)
					w.consecutiveOpenErrs++
					select {
					case <-time.After(backoff):
					case <-run.Done():
					}
					backoff = min(2*backoff, time.Second)
					continue
				}
				w.consecutiveOpenErrs, backoff = 0, 50*time.Millisecond
				w.streams++
				var msgs, entries int64
				var sendErr error
				for o.MessagesPerStream <= 0 || msgs < o.MessagesPerStream {
					if msgs > 0 && !claim() {
						break
					}
					if run.Err() != nil {
						unclaim()
						break
					}
					if interval > 0 {
						if wait := time.Until(next); wait > 0 {
							select {
							case <-time.After(wait):
							case <-run.Done():
							}
						}
						next = next.Add(interval)
						if run.Err() != nil {
							unclaim()
							break
						}
					}
					m := i % len(o.Messages)
					i++
					t0 := time.Now()
					sendErr = st.SendRaw(o.Messages[m])
					w.send.Record(time.Since(t0))
					msgs++
					if sendErr != nil {
						break
					}
					entries += entriesOf(m)
					sent.Add(1)
				}
				t0 := time.Now()
				err = st.Close()
				w.close.Record(time.Since(t0))
				if err == nil && sendErr != nil && !errors.Is(sendErr, io.EOF) {
					err = sendErr
				}
				if err != nil {
					w.fail(err)
					w.unconfirmed += msgs
					continue
				}
				w.messages += msgs
				w.entries += entries
				if o.MaxMessages > 0 && claimed.Load() >= o.MaxMessages {
					return
				}
			}
		}()
	}
	stopProgress := loadProgress(o, start, &sent)
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()

	r := LoadResult{ErrorsByCode: map[string]int64{}, Elapsed: elapsed, DurationSeconds: elapsed.Seconds()}
	var send, closeH loadgen.Histogram
	var errs []error
	firsts := map[codes.Code]error{}
	for _, w := range workers {
		send.Merge(&w.send)
		closeH.Merge(&w.close)
		r.Messages += w.messages
		r.Entries += w.entries
		r.Unconfirmed += w.unconfirmed
		r.Streams += w.streams
		for c, n := range w.errors {
			r.ErrorsByCode[c.String()] += n
			r.Errors += n
			if firsts[c] == nil {
				firsts[c] = w.firstErr[c]
				errs = append(errs, w.firstErr[c])
			}
		}
	}
	if elapsed > 0 {
		r.MessagesPerSecond = float64(r.Messages) / elapsed.Seconds()
		r.EntriesPerSecond = float64(r.Entries) / elapsed.Seconds()
	}
	r.SendLatency, r.CloseLatency = latency(&send), latency(&closeH)
	return r, errors.Join(errs...)
}

func latency(h *loadgen.Histogram) loadgen.Latency {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return loadgen.Latency{P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)), Max: ms(h.Max())}
}

// loadProgress draws the progress line on o.Progress until the returned
// func is called: the same bar as mockmixer load's.
func loadProgress(o LoadOptions, start time.Time, sent *atomic.Int64) func() {
	return loadgen.DrawProgress(o.Progress, func() string { return ProgressLine(o, time.Since(start), sent.Load()) })
}

// ProgressLine renders the bar for the part of the run done, by count or
// by time, with the messages sent and the entry rate.
func ProgressLine(o LoadOptions, elapsed time.Duration, sent int64) string {
	frac := 0.0
	if o.MaxMessages > 0 {
		frac = float64(sent) / float64(o.MaxMessages)
	}
	if o.Duration > 0 {
		frac = max(frac, elapsed.Seconds()/o.Duration.Seconds())
	}
	per := float64(o.EntriesPerMessage)
	if o.EntryCounts != nil {
		total := 0
		for _, n := range o.EntryCounts {
			total += n
		}
		per = float64(total) / float64(len(o.EntryCounts))
	}
	rate := 0.0
	if elapsed > 0 {
		rate = float64(sent) * per / elapsed.Seconds()
	}
	return fmt.Sprintf("%s  %d messages  %.0f entries/s", loadgen.Bar(frac), sent, rate)
}
