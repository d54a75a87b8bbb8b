package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest/loadgen"
)

const loadSynopsis = `Drives an adapter with HandleMetric calls. Requests are encoded once, before the run (a
ring of distinct requests, each instance a COUNTER sample of value 1 with string dimensions
spread over --series label sets), and sent as raw bytes with a fresh dedup_id each, so the
client costs little per request. Prints a progress bar when stderr is a terminal, then a
summary: requests, instances, rates, latency quantiles, errors by gRPC code, and what the
adapter dropped or rejected during the run, read from its /metrics (--metrics-url). The
exit status is 1 when a call failed or the adapter dropped instances (unless --allow-drops).

By default the requests carry a meshmetrics config with one COUNTER, load_requests, over
the instance; --handler takes the adapter_config (and address, authentication) of a handler
of the -f config instead.

Example (the figure of the performance issue: 100 instances of 6 dimensions, 32 callers):
  mockmixer load --address 127.0.0.1:50000 --concurrency 32 --instances 100 --dimensions 6 \
    --series 1000 --duration 30s --output json`

func runLoad(ctx context.Context, args []string, e env) int {
	fs := newFlagSet("load", loadSynopsis, e)
	var c loadgen.Config
	var cf configFlags
	fs.Var(&cf.config, "f", "config of Mixer CRDs, for --handler; repeatable")
	fs.Var(&cf.config, "config", "same as -f")
	handler := fs.String("handler", "", "take adapter_config, address and authentication from this handler of the -f config")
	fs.StringVar(&c.Address, "address", "", "adapter address (required unless --handler gives one)")
	fs.IntVar(&c.Workers, "concurrency", 16, "workers calling at once, each waiting for its reply")
	fs.IntVar(&c.Workers, "c", 16, "same as --concurrency")
	fs.IntVar(&c.Conns, "conns", 4, "HTTP/2 connections the workers share")
	fs.Float64Var(&c.Rate, "rate", 0, "requests per second over all workers (0: as fast as replies come)")
	fs.Float64Var(&c.RatePerWorker, "rate-per-worker", 0, "requests per second per worker (0: no cap)")
	fs.DurationVar(&c.Duration, "duration", 0, "stop after this long (default 10s when --requests is not set)")
	fs.Int64Var(&c.Requests, "requests", 0, "stop after this many requests")
	fs.Int64Var(&c.Requests, "n", 0, "same as --requests")
	fs.IntVar(&c.InstancesPerRequest, "instances", 100, "instances per request")
	fs.IntVar(&c.Series, "series", 1000, "distinct label sets (series) the instances spread over")
	fs.IntVar(&c.Dimensions, "dimensions", 6, "string dimensions per instance, named dim0, dim1, ...")
	fs.IntVar(&c.Ring, "ring", 64, "distinct pre-encoded requests (grows to cover every series)")
	fs.StringVar(&c.InstanceName, "instance", "loadtest.instance.istio-system", "instance name")
	fs.Uint64Var(&c.Seed, "seed", 0, "seed of dimension shuffles and dedup_ids (0: random)")
	fs.BoolVar(&c.RacyDedup, "mixer-dedup-race", false, "reproduce Mixer 1.7's dedup_id race: workers calling at the same moment may share an id (off: every call gets its own); the summary counts the reused ids")
	output := fs.String("output", "text", "summary format: text or json")
	noProgress := fs.Bool("no-progress", false, "no progress bar even on a terminal")
	var df dropFlags
	df.register(fs)
	if err := parse(fs, args); err != nil {
		return usageCode(err, e, "load")
	}
	fail := func(err error) int {
		fmt.Fprintf(e.stderr, "mockmixer load: %v\n", err)
		return exitUsage
	}
	if !slices.Contains([]string{"text", "json"}, *output) {
		return fail(fmt.Errorf("--output %q: want text or json", *output))
	}
	if *handler != "" {
		cf.address = c.Address
		t, err := sendTarget(cf, *handler, "", "", false, e)
		if err != nil {
			return fail(err)
		}
		c.Address, c.Conn, c.AdapterConfig = t.conn.Address, t.conn, t.cfg
	}
	if c.Address == "" {
		return fail(fmt.Errorf("--address is required"))
	}
	if e.stderrIsTTY && !*noProgress {
		c.Progress = e.stderr
	}
	watch := startDropWatch(ctx, df, []string{c.Address}, false)
	s, err := loadgen.Run(ctx, c)
	if err != nil {
		return fail(err)
	}
	drops := watch.finish(ctx, 10*time.Second)
	if *output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(loadResult{Summary: s, Adapter: drops}); err != nil {
			return fail(err)
		}
	} else {
		printSummary(e.stdout, s)
		if drops != nil {
			fmt.Fprintf(e.stdout, "adapter       %s\n", drops)
		}
	}
	if s.Errors > 0 || drops.failed(df.allowDrops) {
		return exitFailed
	}
	return exitOK
}

// loadResult is the JSON output: the load generator's summary and what the
// adapter dropped during the run.
type loadResult struct {
	*loadgen.Summary
	Adapter *adapterDrops `json:"adapter,omitempty"`
}

func printSummary(w io.Writer, s *loadgen.Summary) {
	set := s.Settings
	fmt.Fprintf(w, "target        %s, %d workers over %d connections\n", set.Address, set.Workers, set.Conns)
	fmt.Fprintf(w, "requests      %d (%d instances of %d dimensions each, %d series, %d bytes)\n",
		s.Requests, set.InstancesPerRequest, set.Dimensions, set.Series, set.RequestBytes)
	fmt.Fprintf(w, "instances     %d\n", s.Instances)
	fmt.Fprintf(w, "duration      %.2fs\n", s.DurationSeconds)
	fmt.Fprintf(w, "requests/s    %.1f\n", s.RequestsPerSecond)
	fmt.Fprintf(w, "instances/s   %.1f\n", s.InstancesPerSecond)
	if set.RacyDedup {
		fmt.Fprintf(w, "dedup_ids     %d calls reused an id (--mixer-dedup-race, as a busy Mixer 1.7)\n", s.ReusedDedupIDs)
	}
	fmt.Fprintf(w, "latency       p50 %.3fms  p90 %.3fms  p99 %.3fms  max %.3fms\n", s.Latency.P50, s.Latency.P90, s.Latency.P99, s.Latency.Max)
	if s.Errors == 0 {
		fmt.Fprintln(w, "errors        none")
		return
	}
	codes := make([]string, 0, len(s.ErrorsByCode))
	for code, n := range s.ErrorsByCode {
		codes = append(codes, fmt.Sprintf("%s %d", code, n))
	}
	slices.Sort(codes)
	fmt.Fprintf(w, "errors        %d: %s\n", s.Errors, strings.Join(codes, ", "))
}
