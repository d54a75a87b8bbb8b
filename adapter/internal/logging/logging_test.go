package logging

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/stretchr/testify/require"
)

func TestNewRejectsBadOptions(t *testing.T) {
	_, _, err := New(Options{Format: "xml", Level: "info"})
	require.ErrorContains(t, err, "log format")
	_, _, err = New(Options{Format: "json", Level: "loud"})
	require.ErrorContains(t, err, "log level")
}

func TestSecretsAreRedactedFromEveryFormat(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var out bytes.Buffer
			log, secrets, err := New(Options{Format: format, Level: "debug", Output: &out})
			require.NoError(t, err)
			secrets.Add("tok-123456")
			secrets.Add("tok-123456-long")
			secrets.Add("abc") // too short to be a token; never redacted
			log.WithField("header", "Basic tok-123456-long").Errorf("push failed with token tok-123456 for abc")
			require.NotContains(t, out.String(), "tok-123456")
			require.Contains(t, out.String(), Redacted)
			require.Contains(t, out.String(), "for abc")
			require.Equal(t, "x "+Redacted, secrets.RedactString("x tok-123456"))
		})
	}
}

func TestLimiterHoldsBackRepeats(t *testing.T) {
	var out bytes.Buffer
	log, _, err := New(Options{Format: "text", Level: "info", Output: &out})
	require.NoError(t, err)
	l := NewLimiter(log, 10*time.Second)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }

	for i := 0; i < 5; i++ {
		l.Log(logrus.WarnLevel, "unknown:a", nil, "unknown instance a")
	}
	l.Log(logrus.WarnLevel, "unknown:b", nil, "unknown instance b")
	require.Equal(t, 1, strings.Count(out.String(), "unknown instance a"))
	require.Equal(t, 1, strings.Count(out.String(), "unknown instance b"))

	now = now.Add(11 * time.Second)
	l.Log(logrus.WarnLevel, "unknown:a", nil, "unknown instance a")
	require.Equal(t, 2, strings.Count(out.String(), "unknown instance a"))
	require.Contains(t, out.String(), "suppressed=4")
}

func TestLimiterMemoryIsBounded(t *testing.T) {
	log, _, err := New(Options{Level: "info", Output: &bytes.Buffer{}})
	require.NoError(t, err)
	l := NewLimiter(log, time.Hour)
	for i := 0; i < 3*maxLimiterKeys; i++ {
		l.Log(logrus.InfoLevel, strings.Repeat("k", i%50)+string(rune(i)), nil, "x")
	}
	require.LessOrEqual(t, len(l.slots), maxLimiterKeys)
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"0123456789abc", 10, "0123456789...(13 bytes)"},
		{"ééééé", 3, "é...(10 bytes)"}, // never half a rune
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, Truncate(tc.in, tc.n))
	}
}
