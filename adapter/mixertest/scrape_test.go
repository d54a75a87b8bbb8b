package mixertest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestScrapeURLPrefixKeepsOnlyItsFamilies: the adapter's own families are
// read from a page that also holds many user series, which are not kept;
// a page the reader cannot bound is an error, not a large allocation.
func TestScrapeURLPrefixKeepsOnlyItsFamilies(t *testing.T) {
	own := "# HELP meshmetrics_instances_received_total Instances received.\n" +
		"# TYPE meshmetrics_instances_received_total counter\n" +
		"meshmetrics_instances_received_total 42\n" +
		"# HELP meshmetrics_instances_dropped_total Instances dropped.\n" +
		"# TYPE meshmetrics_instances_dropped_total counter\n" +
		"meshmetrics_instances_dropped_total{reason=\"queue_full\",sink=\"prometheus\"} 3\n"
	var users strings.Builder
	users.WriteString("# HELP istio_requests_total Requests.\n# TYPE istio_requests_total counter\n")
	for i := range 50000 {
		fmt.Fprintf(&users, "istio_requests_total{path=\"/p/%d\"} %d\n", i, i)
	}
	longLine := "istio_x{l=\"" + strings.Repeat("a", maxScrapeLine) + "\"} 1\n"
	var tooMuch strings.Builder
	tooMuch.WriteString("# TYPE meshmetrics_big gauge\n")
	for i := 0; tooMuch.Len() <= maxScrapeKept; i++ {
		fmt.Fprintf(&tooMuch, "meshmetrics_big{n=\"%0200d\"} 1\n", i)
	}
	tests := []struct {
		name    string
		page    string
		wantErr string
	}{
		{"own families among user series", users.String() + own + "# EOF comment\n", ""},
		{"a line longer than the cap", own + longLine, "a line longer than 1 MiB"},
		{"more kept than the cap", tooMuch.String(), "more than 16 MiB of meshmetrics_* families"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte(tc.page))
			}))
			defer srv.Close()
			families, err := ScrapeURLPrefix(context.Background(), srv.URL, "meshmetrics_")
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Len(t, families, 2, "the user family is not kept")
			require.Equal(t, 42.0, families["meshmetrics_instances_received_total"].GetMetric()[0].GetCounter().GetValue())
			dropped := families["meshmetrics_instances_dropped_total"].GetMetric()
			require.Len(t, dropped, 1)
			require.Equal(t, 3.0, dropped[0].GetCounter().GetValue())
			require.Equal(t, "Instances dropped.", families["meshmetrics_instances_dropped_total"].GetHelp())
		})
	}
}
