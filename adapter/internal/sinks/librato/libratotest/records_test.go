package libratotest

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSeriesTotals(t *testing.T) {
	s := newServer(t)
	bodies := []string{
		`{"tags":{"svc":"a"},"measurements":[{"name":"req","value":2},{"name":"req","value":3,"tags":{"svc":"b"}}]}`,
		`{"tags":{"svc":"a"},"measurements":[{"name":"req","count":4,"sum":10,"min":1,"max":4},{"name":"other","value":100}]}`,
		`{"measurements":[{"name":"REQ","value":5,"tags":{"SVC":"A"}}]}`,
	}
	for _, b := range bodies {
		resp, body := do(t, s, call{body: b})
		require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	}
	// A rejected request contributes nothing.
	resp, _ := do(t, s, call{body: `{"tags":{"svc":"a"},"measurements":[{"name":"req","value":1000},{"name":"bad name","value":1}]}`})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	a := map[string]string{"svc": "a"}
	require.Len(t, s.Series("req", a), 3)
	require.Equal(t, 2.0+10+5, s.SumOfValues("req", a))
	require.Equal(t, 2.0+10+5, s.SumOfValues("Req", map[string]string{"SVC": "A"}), "names and tags compare as the service stores them")
	require.Equal(t, 3.0, s.SumOfValues("req", map[string]string{"svc": "b"}))
	require.Zero(t, s.SumOfValues("req", map[string]string{"svc": "a", "extra": "x"}), "tag sets match exactly")
	require.Equal(t, 2.0+3+10+5, s.Total("req"))
	require.Equal(t, int64(1+1+4+1), s.Count("req"))
	require.Equal(t, 100.0, s.Total("other"))
	require.Zero(t, s.Total("missing"))
	require.Len(t, s.Measurements(), 5)

	// Returned records are copies.
	got := s.Measurements()
	got[0].Tags["svc"] = "mutated"
	*got[0].Value = -1
	require.Equal(t, 2.0, *s.Measurements()[0].Value)
	require.Equal(t, "a", s.Measurements()[0].Tags["svc"])
}

func TestRequestsKeepsTheLastN(t *testing.T) {
	s := newServer(t, WithRecentRequests(3))
	for i := range 5 {
		body := fmt.Sprintf(`{"tags":{"a":"b"},"measurements":[{"name":"m%d","value":1}]}`, i)
		resp, _ := do(t, s, call{body: body})
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
	}
	resp, _ := do(t, s, call{body: oneValid, noAuth: true})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	reqs := s.Requests()
	require.Len(t, reqs, 3)
	require.Equal(t, []uint64{4, 5, 6}, []uint64{reqs[0].Seq, reqs[1].Seq, reqs[2].Seq})
	require.Contains(t, string(reqs[0].Body), `"m3"`)
	require.Equal(t, reqs[0].Body, reqs[0].RawBody)
	require.Equal(t, "application/json", reqs[0].Header.Get("Content-Type"))
	require.Equal(t, http.MethodPost, reqs[0].Method)
	require.Equal(t, "/v1/measurements", reqs[0].Path)
	require.Equal(t, http.StatusAccepted, reqs[1].Status)
	require.Equal(t, OutcomeAccepted, reqs[1].Outcome)
	require.Equal(t, http.StatusUnauthorized, reqs[2].Status)
	require.Equal(t, OutcomeRejected, reqs[2].Outcome)
	require.Nil(t, reqs[2].Body, "an unauthenticated body is not decoded")

	reqs[0].Header.Set("Content-Type", "mutated")
	require.Equal(t, "application/json", s.Requests()[0].Header.Get("Content-Type"))

	st := s.Stats()
	require.Equal(t, 6, st.Requests)
	require.Equal(t, map[int]int{202: 5, 401: 1}, st.ByStatus)
	require.Equal(t, 5, st.Accepted)
	require.Equal(t, 5, s.StatusCount(202))
	require.Equal(t, 1, s.StatusCount(401))
	require.Zero(t, s.StatusCount(500))

	s.ResetRecords()
	require.Empty(t, s.Requests())
	require.Empty(t, s.Measurements())
	require.Equal(t, Stats{ByStatus: map[int]int{}}, s.Stats())
	_, ok := s.LastRequest()
	require.False(t, ok)
}
