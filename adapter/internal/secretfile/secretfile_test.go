package secretfile_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/logging"
	"github.com/meshmetrics/meshmetrics/adapter/internal/secretfile"
)

func TestAFileIsReReadWhenItChangesAndKeptWhenItBreaks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte("  first-token\n"), 0o600))
	secrets := &logging.Secrets{}
	var logs bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logs)
	var changes []string
	f, err := secretfile.Open(path, secretfile.Options{What: "librato.token_path", Secrets: secrets,
		Limiter: logging.NewLimiter(log, time.Hour), OnChange: func(v string) { changes = append(changes, v) }})
	require.NoError(t, err)
	require.Equal(t, "first-token", f.Value())
	require.Equal(t, logging.Redacted, secrets.RedactString("first-token"), "registered as a secret")

	require.NoError(t, os.Remove(path))
	v, err := f.Load()
	require.Equal(t, "first-token", v, "the last good value is kept")
	require.ErrorContains(t, err, "librato.token_path: file "+path)
	require.NotContains(t, err.Error(), "first-token")
	require.Equal(t, "first-token", f.Value())
	require.Equal(t, "first-token", f.Value())
	require.Equal(t, 1, bytes.Count(logs.Bytes(), []byte("cannot re-read a secret file")), "reload errors are logged rate-limited")

	require.NoError(t, os.WriteFile(path, []byte("\n"), 0o600))
	_, err = f.Load()
	require.ErrorIs(t, err, secretfile.ErrEmpty)

	require.NoError(t, os.WriteFile(path, []byte("second-token"), 0o600))
	require.Equal(t, "second-token", f.Value())
	require.Equal(t, logging.Redacted, secrets.RedactString("second-token"))
	require.Equal(t, []string{"second-token"}, changes)
	require.NotContains(t, logs.String(), "token\"", "no value in the logs")
}

func TestOpenRefusesAnUnusableFile(t *testing.T) {
	dir := t.TempDir()
	_, err := secretfile.Open(filepath.Join(dir, "absent"), secretfile.Options{What: "bearer_token_file"})
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "bearer_token_file: file "+filepath.Join(dir, "absent"))
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, []byte(" \n"), 0o600))
	_, err = secretfile.Open(empty, secretfile.Options{})
	require.ErrorIs(t, err, secretfile.ErrEmpty)
	_, err = secretfile.Read(empty)
	require.ErrorIs(t, err, secretfile.ErrEmpty)
}

func TestChecksAreSpacedOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte("one"), 0o600))
	f, err := secretfile.Open(path, secretfile.Options{CheckEvery: time.Hour})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte("two-longer"), 0o600))
	require.Equal(t, "one", f.Value(), "not looked at again within CheckEvery")
}

// TestReloadReadsAFileItsStampCallsUnchanged: a file rewritten with the same
// size and modification time within the check interval is not seen by Value
// (a stat says nothing changed), but Reload (SIGHUP) reads it anyway; a
// failed Reload keeps the last good value.
func TestReloadReadsAFileItsStampCallsUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte("token-aaaa"), 0o600))
	stamp := time.Now().Add(-time.Hour).Truncate(time.Second)
	require.NoError(t, os.Chtimes(path, stamp, stamp))
	secrets := &logging.Secrets{}
	var changes []string
	f, err := secretfile.Open(path, secretfile.Options{What: "auth token file", Secrets: secrets, CheckEvery: time.Hour,
		OnChange: func(v string) { changes = append(changes, v) }})
	require.NoError(t, err)

	require.NoError(t, os.WriteFile(path, []byte("token-bbbb"), 0o600))
	require.NoError(t, os.Chtimes(path, stamp, stamp))
	require.Equal(t, "token-aaaa", f.Value(), "the check interval is not over and the stamp is unchanged")

	v, err := f.Reload()
	require.NoError(t, err)
	require.Equal(t, "token-bbbb", v)
	require.Equal(t, "token-bbbb", f.Value())
	require.Equal(t, []string{"token-bbbb"}, changes)
	require.Equal(t, logging.Redacted, secrets.RedactString("token-bbbb"))

	require.NoError(t, os.Remove(path))
	v, err = f.Reload()
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "auth token file: file "+path)
	require.Equal(t, "token-bbbb", v, "the last good value is kept")
	require.Equal(t, "token-bbbb", f.Value())
}
