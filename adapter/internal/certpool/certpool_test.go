package certpool_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/certpool"
	"github.com/meshmetrics/meshmetrics/adapter/mixertest/tlstest"
)

func TestFromFile(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test")
	good := ca.File
	notPEM := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(notPEM, []byte("s3cret-token"), 0o600))
	tests := []struct {
		name, path, wantErr string
	}{
		{"a CA bundle", good, ""},
		{"no such file", filepath.Join(dir, "absent.pem"), "no such file or directory"},
		{"a file without PEM, named but not quoted", notPEM, notPEM + " holds no PEM certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pool, err := certpool.FromFile(tc.path)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				require.NotContains(t, err.Error(), "s3cret")
				require.Nil(t, pool)
				return
			}
			require.NoError(t, err)
			require.True(t, pool.Equal(ca.Pool()), "the pool holds the file's CA")
		})
	}
}
