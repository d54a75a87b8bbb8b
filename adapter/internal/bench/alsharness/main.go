// Command alsharness is the end-to-end benchmark of the Mixer-less mode
// (docs/BENCHMARKS.md): it builds and starts meshmetrics with a config
// directory holding Istio 1.7.8's standard requestcount rule and the
// analytic sample's rule (two rules, two handlers, Prometheus exposition),
// streams pre-encoded realistic access-log entries to it over loopback gRPC
// from this process (the load client shares the machine), and reports
// entries per second end to end and the adapter's CPU time per entry (its
// /proc utime+stime over the entries it read). `make bench` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
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
	flag.Parse()
	if err := run(*duration, *rounds, *streams, *perMsg, *out, *cpuProfile); err != nil {
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

type result struct {
	entries                       int64
	elapsed                       time.Duration
	adapterCPU, clientCPU, perSec float64
}

func run(duration time.Duration, rounds, streams, perMsg int, out, cpuProfile string) error {
	tmp, err := os.MkdirTemp("", "alsharness")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "meshmetrics")
	args := []string{"build", "-o", bin}
	if cpuProfile != "" {
		args = append(args, "-tags", "benchpprof")
	}
	build := exec.Command("go", append(args, "./cmd/meshmetrics")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building meshmetrics: %w", err)
	}
	dir := filepath.Join(tmp, "config")
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
	if err := os.WriteFile(filepath.Join(dir, "handlers.yaml"), []byte(handlersYAML), 0o600); err != nil {
		return err
	}
	grpcAddr, err := freePort()
	if err != nil {
		return err
	}
	httpAddr, err := freePort()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "--grpc-address", grpcAddr, "--http-address", httpAddr, "--config-dir", dir, "--log-level", "warn",
		"--replica", "bench", "--queue-capacity", "4000000", "--als-max-entries-per-message", "100000")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	pprofAddr := ""
	if cpuProfile != "" {
		if pprofAddr, err = freePort(); err != nil {
			return err
		}
		cmd.Env = append(os.Environ(), "ALSHARNESS_PPROF_ADDRESS="+pprofAddr)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	metrics := func() (string, error) {
		resp, err := http.Get("http://" + httpAddr + "/metrics")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	for i := 0; ; i++ {
		if resp, err := http.Get("http://" + httpAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if i > 200 {
			return errors.New("meshmetrics did not become ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	msgs, err := accesslog.RealisticMessages(64, perMsg)
	if err != nil {
		return err
	}
	ctx := context.Background()
	// Warm up: series created, buffers pooled, the JIT of the CPU caches.
	if _, err := accesslog.Load(ctx, accesslog.LoadOptions{Conn: conn, Messages: msgs, EntriesPerMessage: perMsg, Streams: streams, Duration: 2 * time.Second}); err != nil {
		return err
	}
	var results []result
	var total int64
	for r := 0; r < rounds; r++ {
		a0, err := cpuSeconds(cmd.Process.Pid)
		if err != nil {
			return err
		}
		c0 := selfCPU()
		var profile chan error
		if r == 0 && cpuProfile != "" {
			profile = make(chan error, 1)
			go func() { profile <- fetchProfile(pprofAddr, duration, cpuProfile) }()
		}
		res, err := accesslog.Load(ctx, accesslog.LoadOptions{Conn: conn, Messages: msgs, EntriesPerMessage: perMsg, Streams: streams, Duration: duration})
		if err != nil {
			return err
		}
		a1, err := cpuSeconds(cmd.Process.Pid)
		if err != nil {
			return err
		}
		if profile != nil {
			if err := <-profile; err != nil {
				return fmt.Errorf("CPU profile: %w", err)
			}
		}
		total += res.Entries
		results = append(results, result{entries: res.Entries, elapsed: res.Elapsed, adapterCPU: a1 - a0, clientCPU: selfCPU() - c0,
			perSec: float64(res.Entries) / res.Elapsed.Seconds()})
	}
	text, err := metrics()
	if err != nil {
		return err
	}
	received := metricValue(text, `meshmetrics_accesslog_entries_received_total{api="v3",protocol="http"}`)
	dropped := metricValue(text, `meshmetrics_accesslog_skipped_total{reason="queue_full"}`)
	sort.Slice(results, func(i, j int) bool { return results[i].perSec < results[j].perSec })
	med := results[len(results)/2]
	load, _ := os.ReadFile("/proc/loadavg")
	var b strings.Builder
	fmt.Fprintf(&b, "# Mixer-less mode, end to end (alsharness)\n\n")
	fmt.Fprintf(&b, "%s, %d CPUs, %s; load average at the end: %s\n\n", time.Now().UTC().Format(time.RFC3339), runtime.NumCPU(), runtime.Version(), strings.TrimSpace(string(load)))
	fmt.Fprintf(&b, "%d streams, %d realistic HTTP entries per message, %d rounds of %s (median shown), two rules (Istio's requestcount, the analytic sample) into the Prometheus exposition.\n\n", streams, perMsg, rounds, duration)
	fmt.Fprintf(&b, "| round | entries | entries/s | adapter CPU s | adapter CPU per entry | client CPU per entry |\n|---|---|---|---|---|---|\n")
	for i, r := range results {
		fmt.Fprintf(&b, "| %d | %d | %.0f | %.2f | %.2f µs | %.2f µs |\n", i+1, r.entries, r.perSec, r.adapterCPU,
			r.adapterCPU/float64(r.entries)*1e6, r.clientCPU/float64(r.entries)*1e6)
	}
	fmt.Fprintf(&b, "\nMedian: **%.0f entries/s**, **%.2f µs of adapter CPU per entry**.\n", med.perSec, med.adapterCPU/float64(med.entries)*1e6)
	fmt.Fprintf(&b, "Entries received by the adapter (warm-up included): %.0f; dropped at a full sink queue: %.0f.\n", received, dropped)
	fmt.Print(b.String())
	if out != "" {
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}
