package librato

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/secretfile"
	"github.com/meshmetrics/meshmetrics/config"
)

// tokenSource yields the API token from the one place a handler config names:
// the token field, an environment variable, or a file (a mounted Secret,
// kept by secretfile: re-read when it changes, the last good token kept).
// Every value loaded is registered with the logger's secrets; errors name
// the field, the variable or the path, never the value.
type tokenSource struct {
	static string
	file   *secretfile.File
}

// errNoToken is wrapped by every token error, for callers that want to tell
// a missing credential from a transport failure.
var errNoToken = errors.New("librato: no API token")

const tokenPathField = "librato.token_path"

// loadToken reads the token of l without registering it anywhere: Check uses
// it to validate a config without side effects.
func loadToken(l *config.LibratoParams) (string, error) {
	switch {
	case l.Token != "":
		return strings.TrimSpace(l.Token), nil
	case l.TokenEnv != "":
		v, ok := os.LookupEnv(l.TokenEnv)
		if !ok {
			return "", fmt.Errorf("%w: environment variable %s (librato.token_env) is not set", errNoToken, l.TokenEnv)
		}
		if v = strings.TrimSpace(v); v == "" {
			return "", fmt.Errorf("%w: environment variable %s (librato.token_env) is empty", errNoToken, l.TokenEnv)
		}
		return v, nil
	case l.TokenPath != "":
		v, err := secretfile.Read(l.TokenPath)
		if err != nil {
			return "", fmt.Errorf("%w: %s: %w", errNoToken, tokenPathField, err)
		}
		return v, nil
	}
	return "", fmt.Errorf("%w: set librato.token_path, librato.token_env or librato.token", errNoToken)
}

// newTokenSource loads the token of l and registers it with secrets; a
// token file's reload failures are logged through limiter.
func newTokenSource(l *config.LibratoParams, secrets *logging.Secrets, limiter *logging.Limiter) (*tokenSource, error) {
	if l.TokenPath != "" {
		f, err := secretfile.Open(l.TokenPath, secretfile.Options{What: tokenPathField, Secrets: secrets, Limiter: limiter})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errNoToken, err)
		}
		return &tokenSource{file: f}, nil
	}
	v, err := loadToken(l)
	if err != nil {
		return nil, err
	}
	secrets.Add(v)
	return &tokenSource{static: v}, nil
}

// Token returns the current token. When the file cannot be read or is empty
// (a Secret being replaced), the last good token is kept and the error
// returned alongside it.
func (t *tokenSource) Token() (string, error) {
	if t.file == nil {
		return t.static, nil
	}
	v, err := t.file.Load()
	if err != nil {
		return v, fmt.Errorf("%w: %w", errNoToken, err)
	}
	return v, nil
}

// reload re-reads the token file now (SIGHUP); a token from the params or
// the environment has nothing to re-read.
func (t *tokenSource) reload() error {
	if t.file == nil {
		return nil
	}
	if _, err := t.file.Reload(); err != nil {
		return fmt.Errorf("%w: %w", errNoToken, err)
	}
	return nil
}

// current is Token for a request: a reload failure is logged
// (rate-limited) and the last good token used.
func (t *tokenSource) current() string {
	if t.file == nil {
		return t.static
	}
	return t.file.Value()
}
