// Command harness runs the end-to-end benchmarks of docs/BENCHMARKS.md on
// this machine: `mockmixer load` against the ceiling server (which only walks
// the request bytes), against meshmetrics with the Prometheus sink, and
// against meshmetrics with the Librato sink pointed at the fake Librato
// server, side by side and interleaved, because a shared machine is noisy.
// It then measures HandleMetric latency at half the target rate, Librato
// requests per instance over a full period, and RSS over a soak. `make bench`
// runs it; it writes a Markdown report.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato/libratotest"
)

const benchToken = "bench-token-0123456789"

type settings struct {
	duration       time.Duration
	rounds         int
	soak           time.Duration
	libratoRun     time.Duration
	concurrency    int
	out            string
	halfRate       float64 // instances/s for the latency and soak runs
	scenarioFilter string
}

func main() {
	var s settings
	flag.DurationVar(&s.duration, "duration", 10*time.Second, "length of each throughput run")
	flag.IntVar(&s.rounds, "rounds", 3, "interleaved rounds per scenario (the median is reported)")
	flag.DurationVar(&s.soak, "soak", 10*time.Minute, "length of the RSS soak at half the target rate (0 skips it)")
	flag.DurationVar(&s.libratoRun, "librato-run", 70*time.Second, "length of the Librato request-rate run (must cover a 60 s period)")
	flag.IntVar(&s.concurrency, "concurrency", 32, "concurrent callers")
	flag.Float64Var(&s.halfRate, "half-rate", 600000, "instances/s of the latency and soak runs (half of the 1.2M target)")
	flag.StringVar(&s.out, "out", "docs/bench/results.md", "Markdown report")
	flag.StringVar(&s.scenarioFilter, "only", "", "run only scenarios whose name contains this")
	flag.Parse()
	if err := run(s); err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		os.Exit(1)
	}
}

// loadResult is mockmixer load's JSON summary.
type loadResult struct {
	Requests           int64            `json:"requests"`
	Instances          int64            `json:"instances"`
	Errors             int64            `json:"errors"`
	ErrorsByCode       map[string]int64 `json:"errors_by_code"`
	InstancesPerSecond float64          `json:"instances_per_second"`
	Latency            struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	} `json:"latency_ms"`
}

type env struct {
	s      settings
	dir    string
	bin    map[string]string
	fake   *libratotest.Server
	report bytes.Buffer
}

func run(s settings) error {
	dir, err := os.MkdirTemp("", "meshmetrics-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e := &env{s: s, dir: dir, bin: map[string]string{}}
	for name, pkg := range map[string]string{"meshmetrics": "./cmd/meshmetrics", "mockmixer": "./cmd/mockmixer", "ceiling": "./adapter/internal/bench/ceiling"} {
		e.bin[name] = filepath.Join(dir, name)
		if out, err := exec.Command("go", "build", "-o", e.bin[name], pkg).CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %v\n%s", pkg, err, out)
		}
	}
	e.fake = libratotest.New(libratotest.WithCredentials("bench@example.com", benchToken))
	defer e.fake.Close()

	e.header()
	if err := e.throughput(); err != nil {
		return err
	}
	if err := e.latency(); err != nil {
		return err
	}
	if err := e.libratoRequests(); err != nil {
		return err
	}
	if s.soak > 0 {
		if err := e.soakRun(); err != nil {
			return err
		}
	}
	if err := os.WriteFile(s.out, e.report.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Print(e.report.String())
	return nil
}

func (e *env) header() {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	fmt.Fprintf(&e.report, "<!-- Written by `make bench` (adapter/internal/bench/harness). -->\n# Benchmark results\n\n")
	fmt.Fprintf(&e.report, "Run %s on %d cores (%s), %s. Load: `mockmixer load`, %d concurrent callers, 6 string dimensions per instance, "+
		"client on the same machine. Each throughput figure is the median of %d interleaved %s runs.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), cpu, runtime.Version(), e.s.concurrency, e.s.rounds, e.s.duration)
}

// handlerConfig writes the handler CRs that the load uses: one per sink,
// with the series cap raised above the 100k-series scenario.
func (e *env) handlerConfig(grpcAddr string) (string, error) {
	path := filepath.Join(e.dir, "handlers.yaml")
	metrics := `    metrics:
    - name: load_requests
      instance_name: loadtest.instance.istio-system
      kind: COUNTER
      label_names: [dim0, dim1, dim2, dim3, dim4, dim5]
    limits: {max_series_per_metric: 200000}
`
	doc := fmt.Sprintf(`apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: bench-prometheus, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "%[1]s"}
  params:
%[2]s---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: bench-librato, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "%[1]s"}
  params:
%[2]s    librato: {url: "%[3]s", token: "%[4]s", period: 60s}
`, grpcAddr, metrics, e.fake.URL(), benchToken)
	return path, os.WriteFile(path, []byte(doc), 0o644)
}

// server is a running ceiling or meshmetrics.
type server struct {
	cmd      *exec.Cmd
	grpcAddr string
	httpAddr string
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (e *env) start(kind string) (*server, error) {
	s := &server{grpcAddr: freePort()}
	logf, err := os.Create(filepath.Join(e.dir, kind+".log"))
	if err != nil {
		return nil, err
	}
	switch kind {
	case "ceiling":
		s.cmd = exec.Command(e.bin["ceiling"], "--address", s.grpcAddr)
	default:
		s.httpAddr = freePort()
		s.cmd = exec.Command(e.bin["meshmetrics"], "--grpc-address", s.grpcAddr, "--http-address", s.httpAddr,
			"--log-level", "warn", "--max-series", "1000000", "--replica", "bench")
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", s.grpcAddr); err == nil {
			c.Close()
			if s.httpAddr == "" {
				return s, nil
			}
			if r, err := http.Get("http://" + s.httpAddr + "/readyz"); err == nil {
				r.Body.Close()
				if r.StatusCode == http.StatusOK {
					return s, nil
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("%s did not become ready", kind)
}

// stop sends SIGTERM and waits: meshmetrics flushes its sinks on the way out.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// rss is the resident set of the process in bytes.
func (s *server) rss() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func (e *env) load(target *server, handler string, ipr, series int, extra ...string) (loadResult, error) {
	args := []string{"load", "--output", "json", "--no-progress", "-c", strconv.Itoa(e.s.concurrency),
		"--instances", strconv.Itoa(ipr), "--series", strconv.Itoa(series), "--dimensions", "6", "--seed", "1"}
	if handler != "" {
		cfg, err := e.handlerConfig(target.grpcAddr)
		if err != nil {
			return loadResult{}, err
		}
		args = append(args, "-f", "deploy/kubernetes/adapter.yaml", "-f", cfg, "--handler", handler)
	} else {
		args = append(args, "--address", target.grpcAddr)
	}
	args = append(args, extra...)
	if !contains(extra, "--duration") {
		args = append(args, "--duration", e.s.duration.String())
	}
	var out, stderr bytes.Buffer
	cmd := exec.Command(e.bin["mockmixer"], args...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	var r loadResult
	if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
		return r, fmt.Errorf("mockmixer load: %v %v\n%s", err, jerr, stderr.String())
	}
	return r, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

type scenario struct {
	ipr, series int
}

func (sc scenario) String() string {
	return fmt.Sprintf("%d inst/req, %s series", sc.ipr, human(sc.series))
}

func human(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func (e *env) throughput() error {
	targets := []struct{ name, kind, handler string }{
		{"ceiling", "ceiling", ""},
		{"meshmetrics → Prometheus", "meshmetrics", "bench-prometheus"},
		{"meshmetrics → Librato (fake)", "meshmetrics", "bench-librato"},
	}
	fmt.Fprintf(&e.report, "## Throughput\n\n| scenario | ceiling (inst/s) | meshmetrics → Prometheus | ratio | p99 | meshmetrics → Librato | ratio | p99 | errors |\n|---|---|---|---|---|---|---|---|---|\n")
	var scrapeNote, memNote string
	for _, sc := range []scenario{{100, 1000}, {100, 100000}, {1000, 1000}, {1000, 100000}} {
		if e.s.scenarioFilter != "" && !strings.Contains(sc.String(), e.s.scenarioFilter) {
			continue
		}
		rates := make([][]float64, len(targets))
		p99 := make([][]float64, len(targets))
		var errs int64
		for round := 0; round < e.s.rounds; round++ {
			for i, t := range targets {
				srv, err := e.start(t.kind)
				if err != nil {
					return err
				}
				base := srv.rss()
				r, err := e.load(srv, t.handler, sc.ipr, sc.series)
				if err != nil {
					srv.stop()
					return err
				}
				errs += r.Errors
				rates[i] = append(rates[i], r.InstancesPerSecond)
				p99[i] = append(p99[i], r.Latency.P99)
				fmt.Fprintf(os.Stderr, "%s, %s, round %d: %.0f inst/s, p99 %.2f ms, %d errors %v\n", sc, t.name, round+1, r.InstancesPerSecond, r.Latency.P99, r.Errors, r.ErrorsByCode)
				if t.handler == "bench-prometheus" && sc.series == 100000 && sc.ipr == 100 && round == 0 {
					took, size, err := scrapeTime(srv.httpAddr)
					if err != nil {
						srv.stop()
						return err
					}
					rss := srv.rss()
					scrapeNote = fmt.Sprintf("A scrape of `/metrics` right after this run (100k series of 6 labels, %.1f MB of text, uncompressed) took %s (median of 5).", float64(size)/1e6, took.Round(time.Millisecond))
					memNote = fmt.Sprintf("Process RSS with 100k live series: %.0f MB, %.0f MB above the idle adapter (%.0f bytes per series, every buffer and the Go runtime's slack included).",
						float64(rss)/1e6, float64(rss-base)/1e6, float64(rss-base)/1e5)
				}
				srv.stop()
			}
		}
		c, p, l := median(rates[0]), median(rates[1]), median(rates[2])
		fmt.Fprintf(&e.report, "| %s | %.0f | %.0f | %.0f%% | %.1f ms | %.0f | %.0f%% | %.1f ms | %d |\n", sc, c, p, 100*p/c, median(p99[1]), l, 100*l/c, median(p99[2]), errs)
	}
	fmt.Fprintf(&e.report, "\n%s\n\n%s\n\n", scrapeNote, memNote)
	return nil
}

func scrapeTime(httpAddr string) (time.Duration, int64, error) {
	var times []float64
	var size int64
	for i := 0; i < 5; i++ {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+"/metrics", nil)
		req.Header.Set("Accept-Encoding", "identity")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, 0, err
		}
		size, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, 0, err
		}
		times = append(times, float64(time.Since(start)))
	}
	return time.Duration(median(times)), size, nil
}

// latency runs the Prometheus sink at half the target rate and reads the
// client's p99 and the adapter's own HandleMetric latency histogram.
func (e *env) latency() error {
	srv, err := e.start("meshmetrics")
	if err != nil {
		return err
	}
	defer srv.stop()
	rate := e.s.halfRate / 100
	r, err := e.load(srv, "bench-prometheus", 100, 1000, "--rate", fmt.Sprint(rate), "--duration", (2 * e.s.duration).String())
	if err != nil {
		return err
	}
	serverP99, err := handleLatencyQuantile(srv.httpAddr, 0.99)
	if err != nil {
		return err
	}
	fmt.Fprintf(&e.report, "## Latency at half the target rate\n\n`mockmixer load --rate %.0f` (100 instances per request, so %.0f instances/s), 1k series, Prometheus sink, %s:\n\n", rate, e.s.halfRate, 2*e.s.duration)
	fmt.Fprintf(&e.report, "| achieved | client p50 | client p99 | client max | HandleMetric p99 (adapter's histogram) | errors |\n|---|---|---|---|---|---|\n")
	fmt.Fprintf(&e.report, "| %.0f inst/s | %.2f ms | %.2f ms | %.2f ms | %.3f ms | %d |\n\n", r.InstancesPerSecond, r.Latency.P50, r.Latency.P99, r.Latency.Max, serverP99*1000, r.Errors)
	return nil
}

// handleLatencyQuantile estimates a quantile of
// meshmetrics_handle_metric_duration_seconds as histogram_quantile does.
func handleLatencyQuantile(httpAddr string, q float64) (float64, error) {
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, err
	}
	mf, ok := mfs["meshmetrics_handle_metric_duration_seconds"]
	if !ok || len(mf.Metric) == 0 {
		return 0, errors.New("no HandleMetric latency histogram")
	}
	h := mf.Metric[0].GetHistogram()
	total := float64(h.GetSampleCount())
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for _, b := range h.Bucket {
		c := float64(b.GetCumulativeCount())
		if c >= rank {
			if c == prevCount {
				return b.GetUpperBound(), nil
			}
			return prevBound + (b.GetUpperBound()-prevBound)*(rank-prevCount)/(c-prevCount), nil
		}
		prevBound, prevCount = b.GetUpperBound(), c
	}
	return math.Inf(1), nil
}

// libratoRequests runs the Librato sink over a full 60 s period at 1k series
// and counts the requests the fake received per instance sent.
func (e *env) libratoRequests() error {
	before := e.fake.Stats()
	srv, err := e.start("meshmetrics")
	if err != nil {
		return err
	}
	r, err := e.load(srv, "bench-librato", 100, 1000, "--rate", fmt.Sprint(e.s.halfRate/100), "--duration", e.s.libratoRun.String())
	srv.stop() // the final flush sends the open period
	if err != nil {
		return err
	}
	after := e.fake.Stats()
	reqs := after.Requests - before.Requests
	points := after.Accepted - before.Accepted
	fmt.Fprintf(&e.report, "## Librato requests\n\nLibrato sink, 1k series, 60 s period, %s at %.0f instances/s, then SIGTERM (the open period is flushed):\n\n", e.s.libratoRun, e.s.halfRate)
	fmt.Fprintf(&e.report, "| instances sent | HTTP requests | measurements accepted | requests per 100k instances |\n|---|---|---|---|\n")
	fmt.Fprintf(&e.report, "| %d | %d | %d | %.5f |\n\n", r.Instances, reqs, points, float64(reqs)*1e5/float64(r.Instances))
	return nil
}

// soakRun loads the Prometheus sink at half the target rate and samples RSS.
func (e *env) soakRun() error {
	srv, err := e.start("meshmetrics")
	if err != nil {
		return err
	}
	defer srv.stop()
	ctx, cancel := context.WithCancel(context.Background())
	samples := make(chan []int64, 1)
	go func() {
		var rss []int64
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				samples <- rss
				return
			case <-t.C:
				rss = append(rss, srv.rss())
			}
		}
	}()
	r, err := e.load(srv, "bench-prometheus", 100, 1000, "--rate", fmt.Sprint(e.s.halfRate/100), "--duration", e.s.soak.String())
	cancel()
	rss := <-samples
	if err != nil {
		return err
	}
	if len(rss) < 3 {
		return errors.New("soak too short to sample RSS")
	}
	mb := func(b int64) float64 { return float64(b) / 1e6 }
	third := len(rss) / 3
	early := rss[third]
	minR, maxR := rss[0], rss[0]
	for _, x := range rss[third:] {
		minR, maxR = min(minR, x), max(maxR, x)
	}
	fmt.Fprintf(&e.report, "## Soak\n\nPrometheus sink, 1k series, %.0f instances/s for %s (%d instances, %d errors); RSS sampled every 10 s:\n\n", e.s.halfRate, e.s.soak, r.Instances, r.Errors)
	fmt.Fprintf(&e.report, "| RSS after 10 s | after a third | at the end | min–max over the last two thirds | drift over the last two thirds |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&e.report, "| %.1f MB | %.1f MB | %.1f MB | %.1f–%.1f MB | %+.1f%% |\n\n", mb(rss[0]), mb(early), mb(rss[len(rss)-1]), mb(minR), mb(maxR),
		100*float64(rss[len(rss)-1]-early)/float64(early))
	var trace strings.Builder
	w := bufio.NewWriter(&trace)
	for i, x := range rss {
		fmt.Fprintf(w, "%ds=%.1f ", (i+1)*10, mb(x))
	}
	w.Flush()
	fmt.Fprintf(&e.report, "<details><summary>RSS samples (MB)</summary>\n\n%s\n</details>\n\n", trace.String())
	return nil
}
