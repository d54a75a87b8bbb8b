package main

import (
	"os/exec"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDemosCountExactly runs `make demo` and `make demo-mixerless` as a
// newcomer would (demo.sh builds both binaries, starts meshmetrics on free
// ports and stops it). The script works out the expected count from its
// input files and exits non-zero unless istio_analytic_requests adds up to
// exactly that; the test also checks the count it printed.
func TestDemosCountExactly(t *testing.T) {
	ok := regexp.MustCompile(`OK: istio_analytic_requests counts (\d+) [a-z -]+, exactly the (\d+) that matched`)
	for _, tc := range []struct {
		mode, want string
	}{
		{mode: "mixer", want: "8"},     // testdata/attributes/analytic.yaml's 6 and the two flag requests
		{mode: "mixerless", want: "6"}, // testdata/accesslog/analytic.yaml: 5 entries, one repeated
	} {
		t.Run(tc.mode, func(t *testing.T) {
			cmd := exec.Command("bash", "cmd/mockmixer/demo.sh", tc.mode)
			cmd.Dir = "../.."
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			m := ok.FindSubmatch(out)
			require.NotNil(t, m, "%s", out)
			require.Equal(t, tc.want, string(m[1]))
			require.Equal(t, string(m[1]), string(m[2]))
		})
	}
}
