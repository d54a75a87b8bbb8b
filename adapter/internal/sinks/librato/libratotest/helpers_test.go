package libratotest

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
)

// call describes one request; the zero value is an authenticated JSON POST
// to /v1/measurements with the Librato auth form.
type call struct {
	method      string
	path        string
	body        string
	contentType string // "-" sends none
	encoding    string
	gzip        bool
	user, pass  string
	noAuth      bool
	timeout     time.Duration
}

func send(s *Server, c call) (*http.Response, []byte, error) {
	if c.method == "" {
		c.method = http.MethodPost
	}
	if c.path == "" {
		c.path = librato.MeasurementsPath
	}
	if c.contentType == "" {
		c.contentType = "application/json"
	}
	body := []byte(c.body)
	if c.gzip {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(body)
		_ = zw.Close()
		body = buf.Bytes()
		c.encoding = "gzip"
	}
	req, err := http.NewRequest(c.method, s.URL()+c.path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if c.contentType != "-" {
		req.Header.Set("Content-Type", c.contentType)
	}
	if c.encoding != "" {
		req.Header.Set("Content-Encoding", c.encoding)
	}
	if !c.noAuth {
		user, pass := c.user, c.pass
		if user == "" && pass == "" {
			user, pass = DefaultEmail, DefaultToken
		}
		req.SetBasicAuth(user, pass)
	}
	client := *s.Client() // a copy: the server's client is shared
	client.Timeout = c.timeout
	if client.Timeout == 0 {
		client.Timeout = 5 * time.Second
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// do sends c and fails the test on a transport error.
func do(t *testing.T, s *Server, c call) (*http.Response, []byte) {
	t.Helper()
	resp, body, err := send(s, c)
	require.NoError(t, err)
	return resp, body
}

const oneValid = `{"tags":{"host":"a"},"time":1600000020,"period":60,"measurements":[{"name":"m","value":1}]}`

func newServer(t *testing.T, opts ...Option) *Server {
	t.Helper()
	s := New(opts...)
	t.Cleanup(s.Close)
	return s
}
