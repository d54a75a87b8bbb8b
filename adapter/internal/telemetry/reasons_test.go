package telemetry_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/telemetry"
)

// TestReliabilityDocTablesEveryDropReason keeps docs/RELIABILITY.md's table
// of drop reasons equal to telemetry.DropReasons, the one list.
func TestReliabilityDocTablesEveryDropReason(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/RELIABILITY.md")
	require.NoError(t, err)
	row := regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| (.+?) \\| (.+?) \\|$")
	var got []telemetry.DropReason
	start := strings.Index(string(doc), "| reason | where | meaning |")
	require.Positive(t, start, "the table's heading")
	table := string(doc)[start:]
	end := strings.Index(table, "\n\n`")
	require.Positive(t, end, "the table ends before the rejection reasons")
	table = table[:end]
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		got = append(got, telemetry.DropReason{Name: m[1], Where: m[2], Meaning: m[3]})
	}
	require.Equal(t, telemetry.DropReasons(), got)
}

func TestPushAndSinkReasonsAreDocumented(t *testing.T) {
	known := map[string]bool{}
	for _, r := range telemetry.DropReasons() {
		require.False(t, known[r.Name], "%s listed twice", r.Name)
		known[r.Name] = true
	}
	for _, spooled := range []bool{false, true} {
		for _, r := range telemetry.PushDropReasons(spooled) {
			require.True(t, known[r], r)
		}
	}
	for _, r := range telemetry.SinkDropReasons() {
		require.True(t, known[r], r)
	}
}
