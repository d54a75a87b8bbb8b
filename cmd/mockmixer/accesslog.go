package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest/accesslog"
	"github.com/meshmetrics/meshmetrics/adapter/rules/conn"
	"github.com/meshmetrics/meshmetrics/adapter/rules/crd"
)

// The access-log commands play Envoy rather than Mixer: they stream
// access-log entries to the adapter's Access Log Service, for the
// Mixer-less mode (docs/mixerless.md). They live in mockmixer because they
// serve the same purpose (trying rules locally before they reach a
// cluster), reach the adapter the same way (-f and --handler give the
// address and the TLS, mutual TLS or token of a handler's
// connection.authentication) and print what they sent the same way.

const accesslogSynopsis = `Streams access-log entries to the adapter's Access Log Service, as Envoy's gRPC access
logger does (envoy.access_loggers.http_grpc / tcp_grpc), for an adapter started with
--config-dir: its rules, instances and handlers turn each entry into metrics. Entries come
from YAML or JSON files; consecutive entries of one protocol share a message, as in Envoy's
buffer, all on one stream, which the adapter answers once it has processed every message.
Prints what it sent and what came back, then what the adapter dropped, rejected and skipped
meanwhile (read from its /metrics, --metrics-url); exits 1 if it lost anything.

Entries file (a field left out is one Envoy leaves unset, except those with a default):
` + accesslog.EntriesFormat + `

Example:
  meshmetrics --config-dir my-rules/ &
  mockmixer accesslog --address 127.0.0.1:50000 --entries testdata/accesslog/analytic.yaml`

// targetFlags say where the adapter is and how to reach it, as for load.
type targetFlags struct {
	cf      configFlags
	handler string
	api     string
}

func (f *targetFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.cf.config, "f", "config of Mixer CRDs, for --handler; repeatable")
	fs.Var(&f.cf.config, "config", "same as -f")
	fs.StringVar(&f.handler, "handler", "", "take the address and authentication (TLS, mutual TLS, token) from this handler of the -f config")
	fs.StringVar(&f.cf.address, "address", "", "adapter address (required unless --handler gives one)")
	fs.StringVar(&f.api, "api", "v3", "v3, or v2 as Envoy 1.17 and earlier (Istio 1.7's sidecars) stream")
}

// target resolves the address and dial options.
func (f *targetFlags) target(e env) (conn.Options, string, error) {
	method := map[string]string{"v3": accesslog.MethodV3, "v2": accesslog.MethodV2}[f.api]
	if method == "" {
		return conn.Options{}, "", fmt.Errorf("--api %q: want v3 or v2", f.api)
	}
	if f.handler == "" && len(f.cf.config) == 0 {
		if f.cf.address == "" {
			return conn.Options{}, "", errors.New("--address is required")
		}
		return conn.Options{Address: f.cf.address, BypassSANVerification: conn.BypassFromEnv(e.getenv)}, method, nil
	}
	store, err := crd.Load(f.cf.config...)
	if err != nil {
		return conn.Options{}, "", err
	}
	h, err := pick(dynamicHandlers(store), f.handler, "handler")
	if err != nil {
		return conn.Options{}, "", err
	}
	o := conn.Options{Address: f.cf.address, BypassSANVerification: conn.BypassFromEnv(e.getenv)}
	if h.Connection != nil {
		o.Auth = h.Connection.Authentication
		if o.Address == "" {
			o.Address = h.Connection.Address
		}
	}
	if o.Address == "" {
		return conn.Options{}, "", errors.New("no address: pass --address, or a handler with connection.address")
	}
	return o, method, nil
}

func runAccesslog(ctx context.Context, args []string, e env) int {
	fs := newFlagSet("accesslog", accesslogSynopsis, e)
	var tf targetFlags
	tf.register(fs)
	var files listFlag
	fs.Var(&files, "entries", "YAML or JSON file of entries; repeatable (required)")
	perMessage := fs.Int("entries-per-message", 100, "entries in one message at most")
	nodeID := fs.String("node-id", "mockmixer", "the node id of the stream's identifier (a sidecar's is sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local)")
	logName := fs.String("log-name", "mockmixer", "the log_name of the stream's identifier")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of the stream")
	repeat := fs.Int("repeat", 1, "send the entries this many times, on the same stream")
	fs.IntVar(repeat, "r", 1, "same as --repeat")
	quiet := fs.Bool("quiet", false, "print only the summary line")
	fs.BoolVar(quiet, "q", false, "same as --quiet")
	verbose := fs.Bool("verbose", false, "print each entry in full (protobuf JSON), not one line")
	fs.BoolVar(verbose, "v", false, "same as --verbose")
	var df dropFlags
	df.register(fs)
	if err := parse(fs, args); err != nil {
		return usageCode(err, e, "accesslog")
	}
	fail := func(err error) int {
		fmt.Fprintf(e.stderr, "mockmixer accesslog: %v\n", err)
		return exitUsage
	}
	if len(files) == 0 {
		return fail(errors.New("--entries is required"))
	}
	if *repeat < 1 || *perMessage < 1 {
		return fail(errors.New("--repeat and --entries-per-message must be at least 1"))
	}
	var entries []accesslog.Entry
	var errs []error
	for _, f := range files {
		es, err := accesslog.ReadEntries(f)
		errs = append(errs, err)
		entries = append(entries, es...)
	}
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	co, method, err := tf.target(e)
	if err != nil {
		return fail(err)
	}
	cc, err := conn.Dial(co)
	if err != nil {
		return fail(err)
	}
	defer cc.Close()

	out := e.stdout
	if *quiet {
		out = io.Discard
	}
	all := slices.Repeat(entries, *repeat)
	msgs := accesslog.Messages(accesslog.Identifier(*nodeID, "", *logName), all, *perMessage)
	fmt.Fprintf(out, "StreamAccessLogs %s -> %s (node %s, log_name %s)\n", tf.api, co.Address, *nodeID, *logName)
	watch := startDropWatch(ctx, df, []string{co.Address}, true)
	sctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	start := time.Now()
	sum, err := streamMessages(sctx, cc, method, msgs, all, out, *verbose)
	took := time.Since(start).Round(time.Microsecond)
	if err != nil {
		st, _ := status.FromError(err)
		fmt.Fprintf(out, "<- %s: %s (%s)%s\n", st.Code(), st.Message(), took, unreachableHint(err, co.Address))
	} else {
		fmt.Fprintf(out, "<- OK: the stream is answered, every entry processed (%s)\n", took)
	}
	failed := 0
	if err != nil {
		failed = 1
	}
	fmt.Fprintf(e.stdout, "summary: 1 stream (%d failed), %d messages, %d entries (%d HTTP, %d TCP)\n", failed, sum.messages, sum.http+sum.tcp, sum.http, sum.tcp)
	drops := watch.finish(ctx, 10*time.Second)
	if drops != nil {
		fmt.Fprintf(e.stdout, "adapter: %s\n", drops)
	}
	if err != nil || drops.failed(df.allowDrops) {
		return exitFailed
	}
	return exitOK
}

type streamSummary struct{ messages, http, tcp int }

// streamMessages sends the messages on one stream, printing each, and ends
// it; all are the entries in the messages' order, for their file:line.
func streamMessages(ctx context.Context, cc *grpc.ClientConn, method string, msgs []*alsv3.StreamAccessLogsMessage,
	all []accesslog.Entry, out io.Writer, verbose bool,
) (streamSummary, error) {
	var sum streamSummary
	st, err := accesslog.Open(ctx, cc, method)
	if err != nil {
		return sum, err
	}
	next := 0
	for i, m := range msgs {
		var send proto.Message = m
		if method == accesslog.MethodV2 {
			if send, err = accesslog.V2(m); err != nil {
				return sum, err
			}
		}
		n := len(m.GetHttpLogs().GetLogEntry()) + len(m.GetTcpLogs().GetLogEntry())
		kind := "HTTP"
		if m.GetTcpLogs() != nil {
			kind = "TCP"
		}
		fmt.Fprintf(out, "  message %d: %d %s entr%s, %d bytes\n", i+1, n, kind, map[bool]string{true: "y", false: "ies"}[n == 1], proto.Size(send))
		for _, en := range all[next : next+n] {
			fmt.Fprintf(out, "    %s:%d  %s\n", en.File, en.Line, accesslog.Describe(en))
			if verbose {
				var pm proto.Message = en.HTTP
				if en.TCP != nil {
					pm = en.TCP
				}
				fmt.Fprintf(out, "      %s\n", protojson.MarshalOptions{}.Format(pm))
			}
		}
		next += n
		if err := st.Send(send); err != nil {
			if errors.Is(err, io.EOF) {
				break // the stream ended: Close says why
			}
			return sum, err
		}
		sum.messages++
		if kind == "HTTP" {
			sum.http += n
		} else {
			sum.tcp += n
		}
	}
	return sum, st.Close()
}

const accesslogLoadSynopsis = `Drives an adapter's Access Log Service with streams of access-log entries, as a fleet of
Envoys does. Messages are encoded once, before the run (a ring of distinct messages of
realistic sidecar entries, about 600 bytes each, or of the entries of --entries files), and
sent as raw bytes. Prints a progress bar when stderr is a terminal, then a summary: messages
and entries the adapter confirmed (a stream is answered once every message is processed),
rates, latency quantiles, failed streams by gRPC code, and what the adapter dropped,
rejected and skipped meanwhile (read from its /metrics, --metrics-url).

Latency: a client stream has no reply per message. The send latency is the time a message
takes to hand to gRPC: near zero while the adapter keeps up, the wait for flow-control credit
when it lags (an Envoy then buffers, and drops entries past its buffer). The close latency is
the time from the end of a stream to the adapter's answer.

Example (16 Envoys, 100 entries a message, 30 seconds):
  mockmixer accesslog-load --address 127.0.0.1:50000 --streams 16 --duration 30s --output json`

// loadSettings echo an access-log load run's shape.
type loadSettings struct {
	Address           string  `json:"address"`
	API               string  `json:"api"`
	Streams           int     `json:"streams"`
	Conns             int     `json:"conns"`
	Rate              float64 `json:"rate,omitempty"`
	MessagesPerStream int64   `json:"messages_per_stream,omitempty"`
	EntriesPerMessage int     `json:"entries_per_message"`
	Ring              int     `json:"ring"`
	// MessageBytes is the mean size of a message of the ring.
	MessageBytes int    `json:"message_bytes"`
	Entries      string `json:"entries"`
}

type loadReport struct {
	accesslog.LoadResult
	Settings loadSettings `json:"settings"`
	// Adapter is what the adapter dropped, rejected and skipped during the
	// run, from its /metrics.
	Adapter *adapterDrops `json:"adapter,omitempty"`
}

func runAccesslogLoad(ctx context.Context, args []string, e env) int {
	fs := newFlagSet("accesslog-load", accesslogLoadSynopsis, e)
	var tf targetFlags
	tf.register(fs)
	var o accesslog.LoadOptions
	fs.IntVar(&o.Streams, "streams", 4, "concurrent streams (Envoys)")
	fs.IntVar(&o.Streams, "c", 4, "same as --streams")
	conns := fs.Int("conns", 4, "HTTP/2 connections the streams share")
	fs.Float64Var(&o.Rate, "rate", 0, "messages per second over all streams (0: as fast as the adapter reads)")
	fs.DurationVar(&o.Duration, "duration", 0, "stop after this long (default 10s when --messages is not set)")
	fs.Int64Var(&o.MaxMessages, "messages", 0, "stop after this many messages")
	fs.Int64Var(&o.MaxMessages, "n", 0, "same as --messages")
	fs.Int64Var(&o.MessagesPerStream, "messages-per-stream", 0, "end each stream after this many messages and open another (0: one stream per Envoy for the run)")
	perMessage := fs.Int("entries-per-message", 100, "entries in one message")
	ring := fs.Int("ring", 64, "distinct pre-encoded messages")
	var files listFlag
	fs.Var(&files, "entries", "YAML or JSON file of entries to send, cycled, instead of realistic sidecar entries; repeatable")
	output := fs.String("output", "text", "summary format: text or json")
	noProgress := fs.Bool("no-progress", false, "no progress bar even on a terminal")
	var df dropFlags
	df.register(fs)
	if err := parse(fs, args); err != nil {
		return usageCode(err, e, "accesslog-load")
	}
	fail := func(err error) int {
		fmt.Fprintf(e.stderr, "mockmixer accesslog-load: %v\n", err)
		return exitUsage
	}
	if !slices.Contains([]string{"text", "json"}, *output) {
		return fail(fmt.Errorf("--output %q: want text or json", *output))
	}
	if *perMessage < 1 || *ring < 1 || *conns < 1 || o.Streams < 1 {
		return fail(errors.New("--entries-per-message, --ring, --conns and --streams must be at least 1"))
	}
	if o.Rate < 0 {
		return fail(errors.New("--rate must be >= 0"))
	}
	co, method, err := tf.target(e)
	if err != nil {
		return fail(err)
	}
	o.Method = method
	set := loadSettings{Address: co.Address, API: tf.api, Streams: o.Streams, Conns: min(*conns, o.Streams), Rate: o.Rate,
		MessagesPerStream: o.MessagesPerStream, EntriesPerMessage: *perMessage, Ring: *ring, Entries: "realistic sidecar entries"}
	if len(files) == 0 {
		if o.Messages, err = accesslog.RealisticMessages(*ring, *perMessage); err != nil {
			return fail(err)
		}
		o.EntriesPerMessage = *perMessage
	} else {
		var entries []accesslog.Entry
		for _, f := range files {
			es, err := accesslog.ReadEntries(f)
			if err != nil {
				return fail(err)
			}
			entries = append(entries, es...)
		}
		set.Entries = strings.Join(files, ", ")
		if o.Messages, o.EntryCounts, err = ringOf(entries, *ring, *perMessage); err != nil {
			return fail(err)
		}
		set.Ring = len(o.Messages)
	}
	total := 0
	for _, m := range o.Messages {
		total += len(m)
	}
	set.MessageBytes = total / len(o.Messages)
	for range set.Conns {
		co := co
		// Large messages need room in flow control to keep the pipe full.
		co.DialOptions = append(append([]grpc.DialOption(nil), co.DialOptions...),
			grpc.WithInitialWindowSize(4<<20), grpc.WithInitialConnWindowSize(16<<20))
		cc, err := conn.Dial(co)
		if err != nil {
			return fail(err)
		}
		defer cc.Close()
		o.Conns = append(o.Conns, cc)
	}
	if e.stderrIsTTY && !*noProgress {
		o.Progress = e.stderr
	}
	watch := startDropWatch(ctx, df, []string{co.Address}, true)
	r, _ := accesslog.Load(ctx, o) // failed streams are in the result
	rep := loadReport{LoadResult: r, Settings: set, Adapter: watch.finish(ctx, 10*time.Second)}
	if *output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fail(err)
		}
	} else {
		printLoadReport(e.stdout, rep)
	}
	if r.Errors > 0 || rep.Adapter.failed(df.allowDrops) {
		return exitFailed
	}
	return exitOK
}

// ringOf encodes ring messages of perMessage entries from entries, cycled
// as often as needed; HTTP and TCP entries go in messages of their own, in
// proportion to their numbers in the files.
func ringOf(entries []accesslog.Entry, ring, perMessage int) ([][]byte, []int, error) {
	var http, tcp []accesslog.Entry
	for i := 0; len(http)+len(tcp) < ring*perMessage; i++ {
		en := entries[i%len(entries)]
		if en.HTTP != nil {
			http = append(http, en)
		} else {
			tcp = append(tcp, en)
		}
	}
	var msgs [][]byte
	var counts []int
	for _, m := range accesslog.Messages(nil, append(http, tcp...), perMessage) {
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, nil, err
		}
		msgs = append(msgs, b)
		counts = append(counts, len(m.GetHttpLogs().GetLogEntry())+len(m.GetTcpLogs().GetLogEntry()))
	}
	return msgs, counts, nil
}

func printLoadReport(w io.Writer, r loadReport) {
	set := r.Settings
	fmt.Fprintf(w, "target        %s (%s), %d streams over %d connections\n", set.Address, set.API, set.Streams, set.Conns)
	fmt.Fprintf(w, "messages      %d (up to %d entries of %s each, %d bytes on average, %d distinct)\n",
		r.Messages, set.EntriesPerMessage, set.Entries, set.MessageBytes, set.Ring)
	fmt.Fprintf(w, "entries       %d\n", r.Entries)
	fmt.Fprintf(w, "duration      %.2fs\n", r.DurationSeconds)
	fmt.Fprintf(w, "messages/s    %.1f\n", r.MessagesPerSecond)
	fmt.Fprintf(w, "entries/s     %.1f\n", r.EntriesPerSecond)
	fmt.Fprintf(w, "streams       %d opened\n", r.Streams)
	fmt.Fprintf(w, "send latency  p50 %.3fms  p90 %.3fms  p99 %.3fms  max %.3fms\n", r.SendLatency.P50, r.SendLatency.P90, r.SendLatency.P99, r.SendLatency.Max)
	fmt.Fprintf(w, "close latency p50 %.3fms  p90 %.3fms  p99 %.3fms  max %.3fms\n", r.CloseLatency.P50, r.CloseLatency.P90, r.CloseLatency.P99, r.CloseLatency.Max)
	if r.Errors == 0 {
		fmt.Fprintln(w, "errors        none")
	} else {
		codes := make([]string, 0, len(r.ErrorsByCode))
		for code, n := range r.ErrorsByCode {
			codes = append(codes, fmt.Sprintf("%s %d", code, n))
		}
		slices.Sort(codes)
		fmt.Fprintf(w, "errors        %d failed streams: %s (%d messages sent on them unconfirmed)\n", r.Errors, strings.Join(codes, ", "), r.Unconfirmed)
	}
	if r.Adapter != nil {
		fmt.Fprintf(w, "adapter       %s\n", r.Adapter)
	}
}
