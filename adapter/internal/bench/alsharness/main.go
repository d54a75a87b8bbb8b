// Command alsharness is the end-to-end benchmark of the Mixer-less mode
// (docs/BENCHMARKS.md): it builds and starts meshmetrics with a config
// directory holding Istio 1.7.8's standard requestcount rule and the
// analytic sample's rule (two rules, two handlers, Prometheus exposition),
// streams pre-encoded realistic access-log entries to it over loopback gRPC
// from this process (the load client shares the machine), and reports
// entries per second end to end and the adapter's CPU time per entry (its
// /proc utime+stime over the entries it read). `make bench` runs it.
//
// The machine is shared and its load moves the figures by tens of percent,
// so a change is measured with -baseline: both builds run side by side and
// the rounds alternate between them, under the same load.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshmetrics/meshmetrics/adapter/mixertest/accesslog"
)

func main() {
	duration := flag.Duration("duration", 10*time.Second, "length of each run")
	rounds := flag.Int("rounds", 3, "runs (the median is reported)")
	streams := flag.Int("streams", 4, "concurrent streams (Envoys)")
	perMsg := flag.Int("entries-per-message", 100, "entries per StreamAccessLogsMessage")
	out := flag.String("out", "docs/bench/als-results.md", "Markdown report")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the adapter process during the first round to this file (builds it with -tags benchpprof)")
	baseline := flag.String("baseline", "", "also build this git revision and alternate the rounds between the two adapters (before/after under the same load)")
	flag.Parse()
	o := options{duration: *duration, rounds: *rounds, streams: *streams, perMsg: *perMsg, out: *out, cpuProfile: *cpuProfile, baseline: *baseline}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "alsharness:", err)
		os.Exit(1)
	}
}

const handlersYAML = `apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: prometheus, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "meshmetrics.istio-system:50000"}
  params:
    prometheus: {}
    metrics:
    - name: requests_total
      instance_name: requestcount.instance.istio-system
      kind: COUNTER
      label_names: [reporter, source_workload, source_workload_namespace, source_principal, destination_workload, destination_principal, destination_service, destination_service_name, destination_service_namespace, request_protocol, response_code, response_flags, connection_security_policy]
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: analyticprom, namespace: istio-system}
spec:
  adapter: meshmetrics
  connection: {address: "meshmetrics.istio-system:50000"}
  params:
    prometheus: {}
    metrics:
    - name: analytic_requests
      instance_name: analyticcounter.instance.istio-system
      kind: COUNTER
      label_names: [request_path, request_method, response_code, destination_service, source_workload]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: analyticprom, namespace: istio-system}
spec:
  match: match(request.path, "/v1/damage?analytic=*")
  actions: [{handler: analyticprom, instances: [analyticcounter]}]
`

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// cpuSeconds is a process's user+system CPU time from /proc.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err := strconv.ParseFloat(fields[11], 64)
	if err != nil {
		return 0, err
	}
	stime, err := strconv.ParseFloat(fields[12], 64)
	if err != nil {
		return 0, err
	}
	return (utime + stime) / 100, nil // USER_HZ is 100 on Linux
}

func selfCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

func metricValue(text, line string) float64 {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, line+" ") {
			v, _ := strconv.ParseFloat(strings.TrimPrefix(l, line+" "), 64)
			return v
		}
	}
	return -1
}

// fetchProfile saves a CPU profile of the adapter process taken over
// duration (net/http/pprof, in a -tags benchpprof build).
func fetchProfile(addr string, duration time.Duration, file string) error {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(duration.Seconds())))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type options struct {
	duration                  time.Duration
	rounds, streams, perMsg   int
	out, cpuProfile, baseline string
}

type result struct {
	build                         string
	entries                       int64
	elapsed                       time.Duration
	adapterCPU, clientCPU, perSec float64
	gcs                           float64
}

// adapterUnderTest is one running meshmetrics build.
type adapterUnderTest struct {
	name                string
	cmd                 *exec.Cmd
	conn                *grpc.ClientConn
	httpAddr, pprofAddr string
}

func (a *adapterUnderTest) metrics() (string, error) {
	resp, err := http.Get("http://" + a.httpAddr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func (a *adapterUnderTest) gcCycles() float64 {
	text, err := a.metrics()
	if err != nil {
		return -1
	}
	return metricValue(text, "go_gc_duration_seconds_count")
}

func (a *adapterUnderTest) stop() {
	if a.conn != nil {
		a.conn.Close()
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	_ = a.cmd.Wait()
}

// build builds ./cmd/meshmetrics of the module in dir into bin.
func build(dir, bin string, profile bool) error {
	args := []string{"build", "-o", bin}
	if profile {
		args = append(args, "-tags", "benchpprof")
	}
	cmd := exec.Command("go", append(args, "./cmd/meshmetrics")...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building meshmetrics in %s: %w", dir, err)
	}
	return nil
}

// checkout extracts revision rev of the repository into dir.
func checkout(rev, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	archive := exec.Command("git", "archive", rev)
	extract := exec.Command("tar", "-x", "-C", dir)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return err
	}
	extract.Stdin = pipe
	archive.Stderr, extract.Stderr = os.Stderr, os.Stderr
	if err := extract.Start(); err != nil {
		return err
	}
	if err := archive.Run(); err != nil {
		return fmt.Errorf("git archive %s: %w", rev, err)
	}
	return extract.Wait()
}

func start(name, bin, dir string, profile bool) (*adapterUnderTest, error) {
	grpcAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	httpAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--grpc-address", grpcAddr, "--http-address", httpAddr, "--config-dir", dir, "--log-level", "warn",
		"--replica", "bench", "--queue-capacity", "4000000", "--als-max-entries-per-message", "100000")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	a := &adapterUnderTest{name: name, cmd: cmd, httpAddr: httpAddr}
	if profile {
		if a.pprofAddr, err = freePort(); err != nil {
			return nil, err
		}
		cmd.Env = append(os.Environ(), "ALSHARNESS_PPROF_ADDRESS="+a.pprofAddr)
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		if resp, err := http.Get("http://" + httpAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if i > 200 {
			a.stop()
			return nil, fmt.Errorf("meshmetrics (%s) did not become ready", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if a.conn, err = grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		a.stop()
		return nil, err
	}
	return a, nil
}

func writeConfig(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"standard.yaml", "analyticcounter.yaml"} {
		b, err := os.ReadFile(filepath.Join("adapter", "internal", "mixerless", "testdata", "istio", f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "handlers.yaml"), []byte(handlersYAML), 0o600)
}

func run(o options) error {
	tmp, err := os.MkdirTemp("", "alsharness")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	type buildSpec struct{ name, dir string }
	builds := []buildSpec{{"working tree", "."}}
	if o.baseline != "" {
		src := filepath.Join(tmp, "baseline-src")
		if err := checkout(o.baseline, src); err != nil {
			return err
		}
		builds = append(builds, buildSpec{"baseline " + o.baseline, src})
	}
	dir := filepath.Join(tmp, "config")
	if err := writeConfig(dir); err != nil {
		return err
	}
	msgs, err := accesslog.RealisticMessages(64, o.perMsg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var adapters []*adapterUnderTest
	defer func() {
		for _, a := range adapters {
			a.stop()
		}
	}()
	for i, b := range builds {
		bin := filepath.Join(tmp, fmt.Sprintf("meshmetrics-%d", i))
		profile := i == 0 && o.cpuProfile != ""
		if err := build(b.dir, bin, profile); err != nil {
			return err
		}
		a, err := start(b.name, bin, dir, profile)
		if err != nil {
			return err
		}
		adapters = append(adapters, a)
		// Warm up: series created, buffers pooled, the caches of the CPU.
		if _, err := accesslog.Load(ctx, accesslog.LoadOptions{Conn: a.conn, Messages: msgs, EntriesPerMessage: o.perMsg, Streams: o.streams, Duration: 2 * time.Second}); err != nil {
			return err
		}
	}
	load0, _ := os.ReadFile("/proc/loadavg")
	var results []result
	for r := 0; r < o.rounds; r++ {
		for k := range adapters {
			a := adapters[(k+r)%len(adapters)] // alternate which build goes first
			res, err := round(ctx, a, msgs, o, r == 0 && a.pprofAddr != "")
			if err != nil {
				return err
			}
			results = append(results, res)
		}
	}
	load1, _ := os.ReadFile("/proc/loadavg")
	var b strings.Builder
	fmt.Fprintf(&b, "# Mixer-less mode, end to end (alsharness)\n\n")
	fmt.Fprintf(&b, "%s, %d CPUs, %s; load average before the rounds: %s, after: %s\n\n", time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(),
		runtime.Version(), strings.TrimSpace(string(load0)), strings.TrimSpace(string(load1)))
	fmt.Fprintf(&b, "%d streams, %d realistic HTTP entries per message, %d rounds of %s per build (median shown), two rules (Istio's requestcount, the analytic sample) into the Prometheus exposition.\n\n",
		o.streams, o.perMsg, o.rounds, o.duration)
	fmt.Fprintf(&b, "| round | build | entries | entries/s | adapter CPU s | adapter CPU per entry | client CPU per entry | GC cycles |\n|---|---|---|---|---|---|---|---|\n")
	for i, r := range results {
		fmt.Fprintf(&b, "| %d | %s | %d | %.0f | %.2f | %.2f µs | %.2f µs | %.0f |\n", i/len(adapters)+1, r.build, r.entries, r.perSec, r.adapterCPU,
			r.adapterCPU/float64(r.entries)*1e6, r.clientCPU/float64(r.entries)*1e6, r.gcs)
	}
	b.WriteString("\n")
	for _, a := range adapters {
		var perSec, cpu []float64
		for _, r := range results {
			if r.build == a.name {
				perSec = append(perSec, r.perSec)
				cpu = append(cpu, r.adapterCPU/float64(r.entries)*1e6)
			}
		}
		text, err := a.metrics()
		if err != nil {
			return err
		}
		received := metricValue(text, `meshmetrics_accesslog_entries_received_total{api="v3",protocol="http"}`)
		dropped := metricValue(text, `meshmetrics_accesslog_skipped_total{reason="queue_full"}`)
		fmt.Fprintf(&b, "%s: median **%.0f entries/s**, **%.2f µs of adapter CPU per entry** (%.2f–%.2f µs over the rounds). Entries received (warm-up included): %.0f; dropped at a full sink queue: %.0f.\n",
			a.name, median(perSec), median(cpu), slices.Min(cpu), slices.Max(cpu), received, dropped)
	}
	if len(adapters) == 2 {
		// Each round ran both builds back to back: their ratio cancels most
		// of the load's drift from round to round.
		var ratios []float64
		for i := 0; i+1 < len(results); i += 2 {
			x, y := results[i], results[i+1]
			if x.build != adapters[0].name {
				x, y = y, x
			}
			ratios = append(ratios, (x.adapterCPU/float64(x.entries))/(y.adapterCPU/float64(y.entries)))
		}
		fmt.Fprintf(&b, "Adapter CPU per entry, %s / %s, round by round: median **%.3f** (%.3f–%.3f).\n", adapters[0].name, adapters[1].name,
			median(ratios), slices.Min(ratios), slices.Max(ratios))
	}
	fmt.Print(b.String())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// round runs one load of o.duration against a, measuring the adapter's CPU
// time (and the client's), optionally with a CPU profile of the adapter.
func round(ctx context.Context, a *adapterUnderTest, msgs [][]byte, o options, profile bool) (result, error) {
	a0, err := cpuSeconds(a.cmd.Process.Pid)
	if err != nil {
		return result{}, err
	}
	g0 := a.gcCycles()
	c0 := selfCPU()
	var prof chan error
	if profile {
		prof = make(chan error, 1)
		go func() { prof <- fetchProfile(a.pprofAddr, o.duration, o.cpuProfile) }()
	}
	res, err := accesslog.Load(ctx, accesslog.LoadOptions{Conn: a.conn, Messages: msgs, EntriesPerMessage: o.perMsg, Streams: o.streams, Duration: o.duration})
	if err != nil {
		return result{}, err
	}
	a1, err := cpuSeconds(a.cmd.Process.Pid)
	if err != nil {
		return result{}, err
	}
	c1 := selfCPU()
	if prof != nil {
		if err := <-prof; err != nil {
			return result{}, fmt.Errorf("CPU profile: %w", err)
		}
	}
	return result{build: a.name, entries: res.Entries, elapsed: res.Elapsed, adapterCPU: a1 - a0, clientCPU: c1 - c0,
		perSec: float64(res.Entries) / res.Elapsed.Seconds(), gcs: a.gcCycles() - g0}, nil
}
