// Package promtest runs a real Prometheus server for end-to-end tests: the
// Debian package's binary (installed when absent), on 127.0.0.1 with a fresh
// data directory, scraping the given targets and receiving remote writes;
// values are read back through its query API. Nothing depends on a server
// left running: each test starts its own and stops it when it ends.
package promtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Binary returns the prometheus binary, installing the Debian package when
// it is absent (as root, or with sudo -n); the system service the package
// may start is stopped, since tests run their own.
func Binary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("prometheus"); err == nil {
		return p
	}
	var sudo []string
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("sudo"); err != nil {
			t.Fatal("prometheus is not installed and neither root nor sudo is available to install it: run `make deps` as root")
		}
		sudo = []string{"sudo", "-n"}
	}
	command := func(args ...string) *exec.Cmd {
		all := append(append([]string{}, sudo...), args...)
		cmd := exec.CommandContext(t.Context(), all[0], all[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd
	}
	for _, args := range [][]string{{"apt-get", "update", "-qq"}, {"apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"}} {
		out, err := command(args...).CombinedOutput()
		require.NoError(t, err, "%v: %s", args, out)
	}
	_ = command("service", "prometheus", "stop").Run()
	p, err := exec.LookPath("prometheus")
	require.NoError(t, err, "prometheus installed but not on PATH")
	return p
}

// FreeAddr is a free 127.0.0.1 address, for a server whose address must be
// known before it starts (a remote-write URL in a config).
func FreeAddr(t *testing.T) string {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

// Server is a running Prometheus.
type Server struct {
	// URL is its base URL (http://127.0.0.1:port); remote writes go to
	// URL + "/api/v1/write".
	URL string
}

// Start runs Prometheus on addr (FreeAddr when empty) with the
// remote-write receiver on, scraping targets every 250ms as job
// "meshmetrics", and waits until it is ready. It is stopped, and its data
// removed, when the test ends; its log is shown if the test failed.
func Start(t *testing.T, addr string, targets ...string) *Server {
	t.Helper()
	bin := Binary(t)
	if addr == "" {
		addr = FreeAddr(t)
	}
	dir := t.TempDir()
	quoted := make([]string, len(targets))
	for i, target := range targets {
		quoted[i] = strconv.Quote(target)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 250ms
  scrape_timeout: 200ms
scrape_configs:
  - job_name: meshmetrics
    static_configs:
      - targets: [%s]
`, strings.Join(quoted, ", "))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600))
	// Killed in the test's cleanup, after t.Context() has ended.
	cmd := exec.CommandContext(context.Background(), bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-remote-write-receiver", "--log.level=warn")
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("prometheus log:\n%s", b)
			}
		}
	})
	s := &Server{URL: "http://" + addr}
	require.Eventually(t, func() bool {
		resp, err := get(t, s.URL+"/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 50*time.Millisecond, "prometheus did not become ready")
	return s
}

// Sample is one series of an instant query's result.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Query runs an instant query and returns its series, ordered by labels.
func (s *Server) Query(t *testing.T, q string) []Sample {
	t.Helper()
	resp, err := get(t, s.URL+"/api/v1/query?query="+url.QueryEscape(q))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var r struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &r))
	out := make([]Sample, 0, len(r.Data.Result))
	for _, res := range r.Data.Result {
		text, ok := res.Value[1].(string)
		require.True(t, ok, "value of %v: %v", res.Metric, res.Value)
		v, err := strconv.ParseFloat(text, 64)
		require.NoError(t, err)
		out = append(out, Sample{Labels: res.Metric, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i].Labels) < fmt.Sprint(out[j].Labels) })
	return out
}

// WaitValue waits up to 20s until q gives one series whose value is want.
func (s *Server) WaitValue(t *testing.T, q string, want float64) {
	t.Helper()
	var last []Sample
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if last = s.Query(t, q); len(last) == 1 && last[0].Value == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: want one series of value %g, got %+v", q, want, last)
}

func get(t *testing.T, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}
