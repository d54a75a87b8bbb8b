package remotewrite

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/config"
)

// maxErrorBody is how much of a refusal's body is kept for the log, as
// Prometheus' own sender does.
const maxErrorBody = 1024

// send posts one request. The client retries network errors, 429 and 5xx
// until the queue's deadline; any other 4xx is final (Permanent).
func (s *Sink) send(ctx context.Context, r *request) error {
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, s.rw.Url, r.body)
	if err != nil {
		return export.Permanent(fmt.Errorf("remote write request: %v", err))
	}
	for k, v := range s.rw.Headers {
		req.Header.Set(k, v)
	}
	// The protocol's headers, which Normalize keeps users from overriding.
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", userAgent())
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	if err := s.auth.apply(req.Request); err != nil {
		return export.Permanent(err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("remote write to %s: %w", redactURL(s.rw.Url), err)
	}
	if resp.StatusCode/100 == 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		return nil
	}
	body := export.ReadBody(resp, maxErrorBody)
	if i := strings.IndexByte(body, '\n'); i >= 0 {
		body = body[:i]
	}
	err = fmt.Errorf("remote write to %s: HTTP %d: %s", redactURL(s.rw.Url), resp.StatusCode, body)
	if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
		return export.Permanent(err)
	}
	return err
}

func userAgent() string {
	v := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return "meshmetrics/" + v
}

// auth sets the Authorization header: basic auth with a password or a
// password file, or a bearer token file. Files are read again when they
// change (a rotated Kubernetes Secret), and every credential read is
// registered as a secret so that logs never show it.
type auth struct {
	user, password, passwordFile, bearerFile string
	secrets                                  *logging.Secrets

	mu    sync.Mutex
	files map[string]fileValue
}

type fileValue struct {
	mod   time.Time
	size  int64
	value string
}

func newAuth(rw *config.RemoteWrite, env sinks.Env) *auth {
	a := &auth{bearerFile: rw.BearerTokenFile, secrets: env.Secrets, files: map[string]fileValue{}}
	if ba := rw.BasicAuth; ba != nil {
		a.user, a.password, a.passwordFile = ba.Username, ba.Password, ba.PasswordFile
	}
	a.addSecret(a.password)
	if u := rw.Url; u != "" {
		if _, secrets := splitSecrets(&config.RemoteWrite{Url: u}); len(secrets) > 0 {
			a.addSecret(strings.TrimPrefix(secrets[0], "url:"))
		}
	}
	for k, v := range rw.Headers {
		if sensitiveHeader(k) {
			a.addSecret(v)
		}
	}
	return a
}

func (a *auth) addSecret(v string) {
	if a.secrets != nil && v != "" {
		a.secrets.Add(v)
	}
}

func (a *auth) apply(req *http.Request) error {
	switch {
	case a.user != "":
		pw := a.password
		if a.passwordFile != "" {
			var err error
			if pw, err = a.read(a.passwordFile); err != nil {
				return fmt.Errorf("basic_auth.password_file: %v", err)
			}
		}
		req.SetBasicAuth(a.user, pw)
	case a.bearerFile != "":
		tok, err := a.read(a.bearerFile)
		if err != nil {
			return fmt.Errorf("bearer_token_file: %v", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return nil
}

// read returns the trimmed content of path, read again only when its
// modification time or size changed.
func (a *auth) read(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if v, ok := a.files[path]; ok && v.mod.Equal(st.ModTime()) && v.size == st.Size() {
		return v.value, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	a.addSecret(v)
	a.files[path] = fileValue{mod: st.ModTime(), size: st.Size(), value: v}
	return v, nil
}
