package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestREADMECommandsWork runs the commands of README.md's ```sh blocks, as a
// newcomer would type them, against a meshmetrics started for the test:
//   - `make ...` lines are skipped (the make targets are what CI itself runs);
//   - `go run ./cmd/X` runs the binary built from ./cmd/X;
//   - the documented addresses (127.0.0.1:50000, localhost:42422) become the
//     test adapter's free ports;
//   - a `--duration` longer than 2s is cut to 2s, to keep the suite quick.
//
// Each command must exit 0.
func TestREADMECommandsWork(t *testing.T) {
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	commands := readmeCommands(t, filepath.Join(root, "README.md"))
	require.NotEmpty(t, commands)

	bin := t.TempDir()
	for _, name := range []string{"meshmetrics", "mockmixer"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, name), "./cmd/"+name)
		build.Dir = root
		out, err := build.CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	adapter := exec.CommandContext(ctx, filepath.Join(bin, "meshmetrics"), "--grpc-address", grpcAddr, "--http-address", httpAddr, "--log-level", "warn")
	adapter.Stdout, adapter.Stderr = os.Stderr, os.Stderr
	require.NoError(t, adapter.Start())
	t.Cleanup(func() {
		_ = adapter.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = adapter.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cancel()
		}
		cancel()
	})
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 15*time.Second, 50*time.Millisecond)

	goRun := regexp.MustCompile(`\bgo run \./cmd/([a-z]+)`)
	duration := regexp.MustCompile(`--duration [0-9]+[a-z]+`)
	for _, c := range commands {
		t.Run(c, func(t *testing.T) {
			cmd := goRun.ReplaceAllString(c, bin+"/$1")
			cmd = strings.NewReplacer("127.0.0.1:50000", grpcAddr, "localhost:42422", httpAddr, ":42422/", httpAddr+"/").Replace(cmd)
			cmd = duration.ReplaceAllString(cmd, "--duration 2s")
			sh := exec.Command("bash", "-o", "pipefail", "-ec", cmd)
			sh.Dir = root
			out, err := sh.CombinedOutput()
			require.NoError(t, err, "%s\n%s", cmd, out)
		})
	}
}

// readmeCommands returns the commands of the ```sh blocks: comments dropped,
// backslash continuations joined, make targets left out.
func readmeCommands(t *testing.T, path string) []string {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []string
	in, cont := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && strings.HasPrefix(line, "```sh"):
			in = true
			continue
		case in && strings.HasPrefix(line, "```"):
			in = false
			continue
		case !in:
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cont += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		line = strings.TrimSpace(cont + line)
		cont = ""
		if line == "" || strings.HasPrefix(line, "make ") {
			continue
		}
		out = append(out, line)
	}
	require.NoError(t, sc.Err())
	return out
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}
