package libratotest

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOneValuePerSeriesAndTime: like the service, the fake keeps one value
// per series and time. A request sent again replaces its own values
// (Overwritten); a different value for a stored series and time replaces
// the earlier one, which is lost (Conflicts). Other tags, names or times
// are other values; values without a time are all kept.
func TestOneValuePerSeriesAndTime(t *testing.T) {
	tests := []struct {
		name                   string
		bodies                 []string
		legacy                 bool
		kept                   int
		overwritten, conflicts int
		total                  float64
	}{
		{"a request sent again", []string{oneValid, oneValid}, false, 1, 1, 0, 1},
		{"another value, same series and time", []string{oneValid,
			`{"tags":{"host":"a"},"time":1600000020,"measurements":[{"name":"M","value":5}]}`}, false, 1, 1, 1, 5},
		{"tags compared as stored (lower-cased)", []string{oneValid,
			`{"tags":{"HOST":"A"},"time":1600000020,"measurements":[{"name":"m","value":1}]}`}, false, 1, 1, 0, 1},
		{"other tags", []string{oneValid,
			`{"tags":{"host":"b"},"time":1600000020,"measurements":[{"name":"m","value":5}]}`}, false, 2, 0, 0, 6},
		{"another time", []string{oneValid,
			`{"tags":{"host":"a"},"time":1600000021,"measurements":[{"name":"m","value":5}]}`}, false, 2, 0, 0, 6},
		{"within one request", []string{`{"tags":{"host":"a"},"time":1600000020,"measurements":[{"name":"m","value":1},{"name":"m","value":2}]}`},
			false, 1, 1, 1, 2},
		{"no time: each kept", []string{`{"tags":{"host":"a"},"measurements":[{"name":"m","value":1}]}`,
			`{"tags":{"host":"a"},"measurements":[{"name":"m","value":1}]}`}, false, 2, 0, 0, 2},
		{"legacy, same source and time", []string{`{"measure_time":1600000020,"source":"s","gauges":[{"name":"g","value":1}]}`,
			`{"measure_time":1600000020,"source":"S","gauges":[{"name":"g","value":2}]}`}, true, 1, 1, 1, 2},
		{"legacy, a gauge and a counter", []string{`{"measure_time":1600000020,"gauges":[{"name":"g","value":1}],"counters":[{"name":"g","value":2}]}`},
			true, 2, 0, 0, 0},
		{"legacy, no time: each kept", []string{`{"gauges":[{"name":"g","value":1}]}`, `{"gauges":[{"name":"g","value":1}]}`}, true, 2, 0, 0, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t)
			for _, b := range tc.bodies {
				c := call{body: b}
				if tc.legacy {
					c = legacyCall(b)
				}
				resp, body := do(t, s, c)
				require.Less(t, resp.StatusCode, http.StatusMultipleChoices, string(body))
			}
			st := s.Stats()
			require.Equal(t, tc.overwritten, st.Overwritten, "overwritten")
			require.Equal(t, tc.conflicts, st.Conflicts, "conflicts")
			if tc.legacy {
				require.Len(t, s.LegacyPoints(), tc.kept)
				if tc.total > 0 {
					require.Equal(t, tc.total, s.LegacyGaugeTotal("g"))
				}
				return
			}
			require.Len(t, s.Measurements(), tc.kept)
			require.Equal(t, tc.total, s.Total("m"))
		})
	}
}
