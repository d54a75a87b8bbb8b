package faults_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
)

// The hostile client of the hardening scenarios: gRPC calls built by hand
// over HTTP/2 (net/http's), so that a test can send what no
// well-behaved client sends (a 60 MB message to a server that refuses the
// caller, thousands of them at once) with one shared buffer for every
// body, and the process measured is the adapter's alone.

// rawClient sends hand-built gRPC calls to addr.
type rawClient struct {
	tr   *http.Transport
	base string
}

// newRawClient speaks HTTP/2 in clear text (h2c), or over TLS when tlsCfg
// is set.
func newRawClient(addr string, tlsCfg *tls.Config) *rawClient {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	base := "https://" + addr
	if tlsCfg == nil {
		tr.Protocols.SetUnencryptedHTTP2(true)
		base = "http://" + addr
	} else {
		tr.Protocols.SetHTTP2(true)
		tr.TLSClientConfig = tlsCfg
	}
	return &rawClient{tr: tr, base: base}
}

func (c *rawClient) close() { c.tr.CloseIdleConnections() }

// call sends msg, framed as one gRPC message, to method with the given
// metadata, and returns the call's status code. The body is read from msg
// as it is sent: calls may share one buffer.
func (c *rawClient) call(ctx context.Context, method string, md map[string]string, msg []byte) (codes.Code, string, error) {
	var prefix [5]byte
	binary.BigEndian.PutUint32(prefix[1:], uint32(len(msg)))
	body := io.MultiReader(bytes.NewReader(prefix[:]), bytes.NewReader(msg))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+method, body)
	if err != nil {
		return 0, "", err
	}
	req.ContentLength = int64(len(msg) + len(prefix))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	for k, v := range md {
		req.Header.Set(k, v)
	}
	resp, err := c.tr.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	st, msgText := resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	if st == "" {
		st, msgText = resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	}
	if st == "" {
		return 0, "", fmt.Errorf("no grpc-status (HTTP %d)", resp.StatusCode)
	}
	n, err := strconv.Atoi(st)
	if err != nil {
		return 0, "", fmt.Errorf("grpc-status %q", st)
	}
	return codes.Code(n), msgText, nil
}

// procStatus reads a field of /proc/<pid>/status in bytes (VmRSS: resident
// now; VmHWM: the most ever resident).
func procStatus(t testing.TB, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		fields := strings.Fields(rest)
		require.Len(t, fields, 2, "%s: %q", field, rest)
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		require.NoError(t, err)
		return kb << 10
	}
	require.NoError(t, sc.Err())
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// openFiles counts a process's file descriptors.
func openFiles(t testing.TB, pid int) int {
	t.Helper()
	des, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	return len(des)
}

// stream opens a long-lived gRPC stream to method with metadata md: its
// messages are written with send (framed here), and done ends it and
// returns its status. RoundTrip only returns with the server's answer: at
// once when the stream is refused, when the stream ends otherwise.
type rawStream struct {
	w      *io.PipeWriter
	result chan rawResult
}

type rawResult struct {
	code codes.Code
	msg  string
	err  error
}

func (c *rawClient) stream(ctx context.Context, method string, md map[string]string) *rawStream {
	r, w := io.Pipe()
	s := &rawStream{w: w, result: make(chan rawResult, 1)}
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+method, r)
		if err != nil {
			s.result <- rawResult{err: err}
			return
		}
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		for k, v := range md {
			req.Header.Set(k, v)
		}
		resp, err := c.tr.RoundTrip(req)
		if err != nil {
			s.result <- rawResult{err: err}
			return
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = r.CloseWithError(io.ErrClosedPipe) // a refused stream takes no more
		st, text := resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
		if st == "" {
			st, text = resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
		}
		n, err := strconv.Atoi(st)
		if err != nil {
			s.result <- rawResult{err: fmt.Errorf("grpc-status %q (HTTP %d)", st, resp.StatusCode)}
			return
		}
		s.result <- rawResult{code: codes.Code(n), msg: text}
	}()
	return s
}

// send writes one message; an error means the server has ended the stream.
func (s *rawStream) send(msg []byte) error {
	var prefix [5]byte
	binary.BigEndian.PutUint32(prefix[1:], uint32(len(msg)))
	if _, err := s.w.Write(prefix[:]); err != nil {
		return err
	}
	_, err := s.w.Write(msg)
	return err
}

// end closes the client's side and waits for the status.
func (s *rawStream) end() rawResult {
	_ = s.w.Close()
	return <-s.result
}

func readFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	return string(b), err
}
