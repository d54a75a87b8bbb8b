package remotewrite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter/internal/export"
	"github.com/meshmetrics/meshmetrics/adapter/internal/secretfile"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
	"github.com/meshmetrics/meshmetrics/config"
)

// maxErrorBody is how much of a refusal's body is kept for the log, as
// Prometheus' own sender does.
const maxErrorBody = 1024

// post makes one attempt at posting r (export.PushFunc); the export helper
// retries network errors, 429 and 5xx until max_retry_elapsed, and drops
// on any other 4xx.
func (s *Sink) post(ctx context.Context, r *request) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.rw.Url, bytes.NewReader(r.body))
	if err != nil {
		return export.Permanent(fmt.Errorf("remote write request: %w", err))
	}
	for k, v := range s.rw.Headers {
		req.Header.Set(k, v)
	}
	// The protocol's headers, which Normalize keeps users from overriding.
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", userAgent())
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	s.auth.apply(req)
	resp, err := s.client.Do(req)
	if err != nil {
		// net/http's error carries the whole URL: redacted too.
		return export.ClassifyHTTP(nil, err, fmt.Errorf("remote write to %s: %w", redactURL(s.rw.Url), config.RedactURLError(err)))
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
	return export.ClassifyHTTP(resp, nil, fmt.Errorf("remote write to %s: HTTP %d: %s", redactURL(s.rw.Url), resp.StatusCode, body))
}

func userAgent() string {
	v := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return "meshmetrics/" + v
}

// auth sets the Authorization header: basic auth with a password or a
// password file, or a bearer token file. Files are kept by secretfile (read
// again when they change, a rotated Kubernetes Secret; the last good value
// kept), and every credential is registered as a secret so that logs never
// show it.
type auth struct {
	user, password string
	passwordFile   *secretfile.File
	bearerFile     *secretfile.File
}

func newAuth(rw *config.RemoteWrite, env sinks.Env) (*auth, error) {
	a := &auth{}
	addSecret := func(v string) {
		if env.Secrets != nil && v != "" {
			env.Secrets.Add(v)
		}
	}
	open := func(path, what string) (*secretfile.File, error) {
		return secretfile.Open(path, secretfile.Options{What: field + what, Secrets: env.Secrets, Limiter: env.Limiter})
	}
	var err error
	if ba := rw.BasicAuth; ba != nil {
		a.user, a.password = ba.Username, ba.Password
		addSecret(a.password)
		if ba.PasswordFile != "" {
			if a.passwordFile, err = open(ba.PasswordFile, "basic_auth.password_file"); err != nil {
				return nil, err
			}
		}
	}
	if rw.BearerTokenFile != "" {
		if a.bearerFile, err = open(rw.BearerTokenFile, "bearer_token_file"); err != nil {
			return nil, err
		}
	}
	if u := rw.Url; u != "" {
		if _, secrets := splitSecrets(&config.RemoteWrite{Url: u}); len(secrets) > 0 {
			addSecret(strings.TrimPrefix(secrets[0], "url:"))
		}
	}
	for k, v := range rw.Headers {
		if sensitiveHeader(k) {
			addSecret(v)
		}
	}
	return a, nil
}

// reload re-reads the credential files now (SIGHUP).
func (a *auth) reload() error {
	var errs []error
	for _, f := range []*secretfile.File{a.passwordFile, a.bearerFile} {
		if f != nil {
			if _, err := f.Reload(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (a *auth) apply(req *http.Request) {
	switch {
	case a.user != "":
		pw := a.password
		if a.passwordFile != nil {
			pw = a.passwordFile.Value()
		}
		req.SetBasicAuth(a.user, pw)
	case a.bearerFile != nil:
		req.Header.Set("Authorization", "Bearer "+a.bearerFile.Value())
	}
}
