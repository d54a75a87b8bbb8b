package librato

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/config"
)

// tokenSource yields the API token from the one place a handler config names:
// the token field, an environment variable, or a file. A file is a mounted
// Kubernetes Secret, which the kubelet replaces in place when the Secret
// changes, so it is looked at again (a stat) before every request and re-read
// when it changed. Every value loaded is registered with the logger's
// secrets, so it is redacted from every log line; errors name the field, the
// variable or the path, never the value.
type tokenSource struct {
	path    string
	secrets *logging.Secrets

	mu      sync.Mutex
	current string
	stamp   fileStamp
}

// fileStamp tells whether a file changed since it was read.
type fileStamp struct {
	modTime time.Time
	size    int64
}

// errNoToken is wrapped by every token error, for callers that want to tell
// a missing credential from a transport failure.
var errNoToken = errors.New("librato: no API token")

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
		v, _, err := readTokenFile(l.TokenPath)
		return v, err
	}
	return "", fmt.Errorf("%w: set librato.token_path, librato.token_env or librato.token", errNoToken)
}

// newTokenSource loads the token of l and registers it with secrets.
func newTokenSource(l *config.LibratoParams, secrets *logging.Secrets) (*tokenSource, error) {
	t := &tokenSource{path: l.TokenPath, secrets: secrets}
	if t.path != "" {
		v, stamp, err := readTokenFile(t.path)
		if err != nil {
			return nil, err
		}
		t.set(v, stamp)
		return t, nil
	}
	v, err := loadToken(l)
	if err != nil {
		return nil, err
	}
	t.set(v, fileStamp{})
	return t, nil
}

func (t *tokenSource) set(v string, stamp fileStamp) {
	t.secrets.Add(v)
	t.current, t.stamp = v, stamp
}

// Token returns the current token. When the file cannot be read or is empty
// (a Secret being replaced), the last good token is kept and the error
// returned alongside it, for the caller to log.
func (t *tokenSource) Token() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.path == "" {
		return t.current, nil
	}
	fi, err := os.Stat(t.path)
	if err != nil {
		return t.current, fmt.Errorf("%w: token file %s (librato.token_path): %v", errNoToken, t.path, cause(err))
	}
	if (fileStamp{modTime: fi.ModTime(), size: fi.Size()}) == t.stamp {
		return t.current, nil
	}
	v, stamp, err := readTokenFile(t.path)
	if err != nil {
		return t.current, err
	}
	t.set(v, stamp)
	return t.current, nil
}

// cause drops the path from a file error: the message names it already.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readTokenFile reads and trims a token file. The stamp is taken before the
// read, so a change racing with it is seen again next time, not missed.
func readTokenFile(path string) (string, fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fileStamp{}, fmt.Errorf("%w: token file %s (librato.token_path): %v", errNoToken, path, cause(err))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fileStamp{}, fmt.Errorf("%w: token file %s (librato.token_path): %v", errNoToken, path, cause(err))
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fileStamp{}, fmt.Errorf("%w: token file %s (librato.token_path) is empty", errNoToken, path)
	}
	return v, fileStamp{modTime: fi.ModTime(), size: fi.Size()}, nil
}
