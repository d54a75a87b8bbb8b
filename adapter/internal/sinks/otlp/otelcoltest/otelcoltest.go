// Package otelcoltest runs the official OpenTelemetry Collector for the
// OTLP sink's end-to-end tests: Build compiles the tiny collector in
// collector/ (its own module, pinned to one collector release: otelcol,
// the OTLP receiver and the OTLP/HTTP exporter) once into a cache directory
// outside the repository and reuses it; Start runs it on 127.0.0.1 with a
// config file written for the test: its OTLP receiver listens for gRPC and
// HTTP on free ports, and its OTLP/HTTP exporter sends what it received,
// as the collector decoded and re-encoded it, to a receiver of the test
// (an otlptest.Server), which reads it back as protobuf.
package otelcoltest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Release is the collector release collector/go.mod pins (otelcol and the
// receiver v0.x, the stable modules v1.x).
const Release = "v0.165.0"

// dir is the collector module, next to this file.
func dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "collector")
}

// BuildResult says where the binary is and what it cost.
type BuildResult struct {
	Path string
	// Took is how long Build took; Cached: the binary was there already.
	Took   time.Duration
	Cached bool
}

// binaryPath is where a collector built from the current sources lives:
// beside the Go build cache, named after the release and a digest of the
// module's files and the Go version, so that a change rebuilds it.
func binaryPath() (string, error) {
	cache, err := exec.CommandContext(context.Background(), "go", "env", "GOCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOCACHE: %w", err)
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(dir(), f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s:%d:", f, len(b))
		h.Write(b)
	}
	h.Write([]byte(runtime.Version()))
	name := fmt.Sprintf("otelcol-%s-%s", Release, hex.EncodeToString(h.Sum(nil))[:12])
	return filepath.Join(filepath.Dir(strings.TrimSpace(string(cache))), "meshmetrics-tools", name), nil
}

// Build returns the collector binary, building it when absent. Concurrent
// test processes wait for one build (a lock file).
func Build() (BuildResult, error) {
	began := time.Now()
	path, err := binaryPath()
	if err != nil {
		return BuildResult{}, err
	}
	if _, err := os.Stat(path); err == nil {
		return BuildResult{Path: path, Took: time.Since(began), Cached: true}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return BuildResult{}, err
	}
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return BuildResult{}, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return BuildResult{}, err
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if _, err := os.Stat(path); err == nil { // built while we waited
		return BuildResult{Path: path, Took: time.Since(began), Cached: true}, nil
	}
	tmp := path + ".tmp"
	cmd := exec.CommandContext(context.Background(), "go", "build", "-trimpath", "-o", tmp, ".")
	cmd.Dir = dir()
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return BuildResult{}, fmt.Errorf("building the collector: %w\n%s", err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		return BuildResult{}, err
	}
	return BuildResult{Path: path, Took: time.Since(began)}, nil
}

// Collector is a running collector.
type Collector struct {
	// GRPC is the OTLP receiver's gRPC endpoint (host:port), HTTP its
	// HTTP base URL (http://host:port; metrics at /v1/metrics).
	GRPC, HTTP string
	cmd        *exec.Cmd
	logs       *syncBuffer
	// exited is closed when the process has exited, with exitErr set.
	exited  chan struct{}
	exitErr error
}

// Start runs the collector binary with its OTLP receiver on free loopback
// ports and its exporter sending to exportURL (an OTLP/HTTP metrics URL);
// it is stopped when the test ends.
func Start(t testing.TB, binary, exportURL string) *Collector {
	t.Helper()
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s
exporters:
  otlphttp:
    metrics_endpoint: %s
    encoding: proto
    compression: none
    retry_on_failure:
      enabled: false
    sending_queue:
      enabled: false
service:
  telemetry:
    logs:
      level: info
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [otlphttp]
`, grpcAddr, httpAddr, exportURL)
	path := filepath.Join(t.TempDir(), "collector.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Collector{GRPC: grpcAddr, HTTP: "http://" + httpAddr, logs: &syncBuffer{}, exited: make(chan struct{})}
	c.cmd = exec.CommandContext(context.Background(), binary, "--config=file:"+path)
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.exitErr = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
		if t.Failed() {
			t.Logf("collector log:\n%s", c.Logs())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range []string{grpcAddr, httpAddr} {
		for {
			conn, err := (&net.Dialer{Timeout: 100 * time.Millisecond}).DialContext(context.Background(), "tcp", addr)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case <-c.exited:
				t.Fatalf("the collector exited: %v\n%s", c.exitErr, c.Logs())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the collector does not listen on %s:\n%s", addr, c.Logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return c
}

// Logs is what the collector printed.
func (c *Collector) Logs() string { return c.logs.String() }

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var _ io.Writer = (*syncBuffer)(nil)
