package libratotest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
)

func TestAuthForms(t *testing.T) {
	s := newServer(t, WithCredentials("ops@example.com", "s3cret"))
	tests := []struct {
		name       string
		c          call
		wantStatus int
		wantForm   AuthForm
	}{
		{"librato email and token", call{user: "ops@example.com", pass: "s3cret"}, 202, AuthLibrato},
		{"appoptics token with empty password", call{user: "s3cret", pass: ""}, 202, AuthAppOptics},
		{"appoptics user token", call{user: "token", pass: "s3cret"}, 202, AuthAppOpticsToken},
		{"missing", call{noAuth: true}, 401, AuthMissing},
		{"wrong token", call{user: "ops@example.com", pass: "nope"}, 401, AuthRejected},
		{"wrong email", call{user: "other@example.com", pass: "s3cret"}, 401, AuthRejected},
		{"token as user with a password", call{user: "s3cret", pass: "x"}, 401, AuthRejected},
		{"user token with wrong password", call{user: "token", pass: "token"}, 401, AuthRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.body = oneValid
			resp, body := do(t, s, tt.c)
			require.Equal(t, tt.wantStatus, resp.StatusCode, string(body))
			last, ok := s.LastRequest()
			require.True(t, ok)
			require.Equal(t, tt.wantForm, last.Auth)
			if tt.wantStatus == 401 {
				var e librato.ErrorResponse
				require.NoError(t, json.Unmarshal(body, &e))
				require.NotEmpty(t, e.Errors.Request)
				require.Equal(t, OutcomeRejected, last.Outcome)
			}
		})
	}
	require.Equal(t, 3, s.Stats().Accepted)
}

func tagsJSON(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`"t%02d":"v"`, i)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func TestMeasurementRules(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name      string
		body      string
		wantParam string // "" means accepted
	}{
		{"minimal", `{"measurements":[{"name":"m","value":1,"tags":{"a":"b"}}]}`, ""},
		{"docs example", docExample, ""},
		{"measurements absent", `{"tags":{"a":"b"}}`, "measurements"},
		{"measurements empty", `{"tags":{"a":"b"},"measurements":[]}`, "measurements"},
		{"name absent", `{"tags":{"a":"b"},"measurements":[{"value":1}]}`, "measurements[0].name"},
		{"name with space", `{"tags":{"a":"b"},"measurements":[{"name":"a b","value":1}]}`, "measurements[0].name"},
		{"name 255", `{"tags":{"a":"b"},"measurements":[{"name":"` + long(255) + `","value":1}]}`, ""},
		{"name 256", `{"tags":{"a":"b"},"measurements":[{"name":"` + long(256) + `","value":1}]}`, "measurements[0].name"},
		{"name punctuation", `{"tags":{"a":"b"},"measurements":[{"name":"A-z_0.9:x","value":1}]}`, ""},
		{"no tags anywhere", `{"measurements":[{"name":"m","value":1}]}`, "measurements[0].tags"},
		{"empty top-level tags, own tags", `{"tags":{},"measurements":[{"name":"m","value":1,"tags":{"a":"b"}}]}`, ""},
		{"own empty tags replace top-level", `{"tags":{"a":"b"},"measurements":[{"name":"m","value":1,"tags":{}}]}`, "measurements[0].tags"},
		{"second measurement lacks tags", `{"measurements":[{"name":"m","value":1,"tags":{"a":"b"}},{"name":"m","value":2}]}`, "measurements[1].tags"},
		{"tag name with space", `{"tags":{"a b":"c"},"measurements":[{"name":"m","value":1}]}`, "tags"},
		{"tag name with slash", `{"measurements":[{"name":"m","value":1,"tags":{"a/b":"c"}}]}`, "measurements[0].tags"},
		{"tag name 64", `{"tags":{"` + long(64) + `":"c"},"measurements":[{"name":"m","value":1}]}`, ""},
		{"tag name 65", `{"tags":{"` + long(65) + `":"c"},"measurements":[{"name":"m","value":1}]}`, "tags"},
		{"tag value punctuation", `{"tags":{"p":"/a\\b?c:d.e-f_g h"},"measurements":[{"name":"m","value":1}]}`, ""},
		{"tag value with =", `{"tags":{"p":"a=b"},"measurements":[{"name":"m","value":1}]}`, "tags"},
		{"tag value empty", `{"tags":{"p":""},"measurements":[{"name":"m","value":1}]}`, "tags"},
		{"tag value 255", `{"tags":{"p":"` + long(255) + `"},"measurements":[{"name":"m","value":1}]}`, ""},
		{"tag value 256", `{"tags":{"p":"` + long(256) + `"},"measurements":[{"name":"m","value":1}]}`, "tags"},
		{"tag value unicode", `{"tags":{"p":"größe"},"measurements":[{"name":"m","value":1}]}`, "tags"},
		{"50 tags", `{"tags":` + tagsJSON(50) + `,"measurements":[{"name":"m","value":1}]}`, ""},
		{"51 tags", `{"tags":` + tagsJSON(51) + `,"measurements":[{"name":"m","value":1}]}`, "tags"},
		{"51 own tags", `{"measurements":[{"name":"m","value":1,"tags":` + tagsJSON(51) + `}]}`, "measurements[0].tags"},
		{"tag names equal once lower-cased", `{"tags":{"a":"x","A":"y"},"measurements":[{"name":"m","value":1}]}`, "tags"},
		{"summary", `{"tags":{"a":"b"},"measurements":[{"name":"m","count":3,"sum":6,"min":1,"max":3,"last":2,"stddev":0.8}]}`, ""},
		{"count without sum", `{"tags":{"a":"b"},"measurements":[{"name":"m","count":3}]}`, "measurements[0].sum"},
		{"count with value", `{"tags":{"a":"b"},"measurements":[{"name":"m","count":3,"sum":6,"value":2}]}`, "measurements[0].value"},
		{"count not an integer", `{"tags":{"a":"b"},"measurements":[{"name":"m","count":1.5,"sum":6}]}`, "measurements[0].count"},
		{"count negative", `{"tags":{"a":"b"},"measurements":[{"name":"m","count":-1,"sum":6}]}`, "measurements[0].count"},
		{"neither value nor count", `{"tags":{"a":"b"},"measurements":[{"name":"m","sum":6}]}`, "measurements[0].value"},
		{"value at the exponent limit", `{"tags":{"a":"b"},"measurements":[{"name":"m","value":1e126}]}`, ""},
		{"value above the exponent limit", `{"tags":{"a":"b"},"measurements":[{"name":"m","value":1e127}]}`, "measurements[0].value"},
		{"negative value above the limit", `{"tags":{"a":"b"},"measurements":[{"name":"m","value":-2e126}]}`, "measurements[0].value"},
		{"value beyond float64", `{"tags":{"a":"b"},"measurements":[{"name":"m","value":1e400}]}`, "measurements[0].value"},
		{"sum above the limit", `{"tags":{"a":"b"},"measurements":[{"name":"m","count":1,"sum":1e130}]}`, "measurements[0].sum"},
		{"max above the limit", `{"tags":{"a":"b"},"measurements":[{"name":"m","count":1,"sum":1,"max":1e130}]}`, "measurements[0].max"},
		{"time not an integer", `{"tags":{"a":"b"},"time":1.5,"measurements":[{"name":"m","value":1}]}`, "time"},
		{"own time negative", `{"tags":{"a":"b"},"measurements":[{"name":"m","value":1,"time":-1}]}`, "measurements[0].time"},
		{"period zero", `{"tags":{"a":"b"},"period":0,"measurements":[{"name":"m","value":1}]}`, "period"},
		{"attributes", `{"tags":{"a":"b"},"measurements":[{"name":"m","value":1,"attributes":{"aggregate":true,"display_name":"x"}}]}`, ""},
	}
	s := newServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.Measurements())
			resp, body := do(t, s, call{body: tt.body})
			if tt.wantParam == "" {
				require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
				require.Contains(t, string(body), `"failed":0`)
				require.NotContains(t, string(body), `"errors"`)
				var got librato.MeasurementsResponse
				require.NoError(t, json.Unmarshal(body, &got))
				require.Equal(t, len(s.Measurements())-before, got.Measurements.Summary.Accepted)
				require.Positive(t, got.Measurements.Summary.Accepted)
				return
			}
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(body))
			var e librato.ErrorResponse
			require.NoError(t, json.Unmarshal(body, &e), string(body))
			require.Contains(t, e.Errors.Params, tt.wantParam, string(body))
			require.Len(t, s.Measurements(), before, "a rejected request must record nothing")
		})
	}
}

const docExample = `{ "tags": {"cluster":"prod","reporter":"destination"}, "time": 1600000020, "period": 60,
  "measurements": [
    {"name":"istio.requests","value":17},
    {"name":"istio.request.size","time":1600000030,"period":30,"attributes":{"aggregate":false},
     "count":3,"sum":1650,"min":120,"max":1024,"last":506,"stddev":370.37,
     "tags":{"Cluster":"Prod","reporter":"source"}} ] }`

func TestRecordsResolveTopLevelFieldsWithoutMerging(t *testing.T) {
	s := newServer(t)
	resp, body := do(t, s, call{body: docExample})
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))

	got := s.Measurements()
	require.Len(t, got, 2)
	require.Equal(t, librato.Measurement{
		Name: "istio.requests", Tags: map[string]string{"cluster": "prod", "reporter": "destination"},
		Time: 1600000020, Period: 60, Value: new(17.0),
	}, got[0].Measurement)
	require.Equal(t, librato.Measurement{
		Name: "istio.request.size", Tags: map[string]string{"cluster": "prod", "reporter": "source"},
		Time: 1600000030, Period: 30, Attributes: &librato.Attributes{},
		Count: new(int64(3)), Sum: new(1650.0), Min: new(120.0), Max: new(1024.0), Last: new(506.0), Stddev: new(370.37),
	}, got[1].Measurement, "own tags replace the top-level set and are lower-cased")
	last, _ := s.LastRequest()
	require.Equal(t, last.Seq, got[0].Request)

	// A measurement with only one of the top-level tags must not gain the other.
	resp, _ = do(t, s, call{body: `{"tags":{"a":"1","b":"2"},"measurements":[{"name":"x","value":1,"tags":{"c":"3"}}]}`})
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Equal(t, map[string]string{"c": "3"}, s.Series("x", map[string]string{"c": "3"})[0].Tags)
}

func TestTinyValuesAreTruncatedToZero(t *testing.T) {
	s := newServer(t)
	resp, body := do(t, s, call{body: `{"tags":{"a":"b"},"measurements":[{"name":"m","value":1e-131},{"name":"n","value":-1e-400},{"name":"o","value":1e-129}]}`})
	require.Equal(t, http.StatusAccepted, resp.StatusCode, string(body))
	got := s.Measurements()
	require.Equal(t, 0.0, *got[0].Value)
	require.Equal(t, 0.0, *got[1].Value)
	require.Equal(t, 1e-129, *got[2].Value)
}

func TestContentTypeAndEncoding(t *testing.T) {
	tests := []struct {
		name       string
		c          call
		wantStatus int
	}{
		{"json", call{}, 202},
		{"json with charset", call{contentType: "application/json; charset=utf-8"}, 202},
		{"text", call{contentType: "text/plain"}, 415},
		{"form", call{contentType: "application/x-www-form-urlencoded"}, 415},
		{"none", call{contentType: "-"}, 415},
		{"gzip", call{gzip: true}, 202},
		{"identity", call{encoding: "identity"}, 202},
		{"unsupported encoding", call{encoding: "br"}, 415},
		{"gzip header on a plain body", call{encoding: "gzip"}, 400},
	}
	s := newServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.body = oneValid
			resp, body := do(t, s, tt.c)
			require.Equal(t, tt.wantStatus, resp.StatusCode, string(body))
			if tt.wantStatus == 415 {
				var e librato.ErrorResponse
				require.NoError(t, json.Unmarshal(body, &e))
				require.NotEmpty(t, e.Errors.Request)
			}
		})
	}
	require.Equal(t, 4, s.Stats().Accepted)
	require.Equal(t, "Content type was not application/json", func() string {
		_, body := do(t, s, call{body: oneValid, contentType: "text/plain"})
		var e librato.ErrorResponse
		require.NoError(t, json.Unmarshal(body, &e))
		return e.Errors.Request[0]
	}())
}

func TestGzipRequestIsRecordedDecoded(t *testing.T) {
	s := newServer(t)
	resp, _ := do(t, s, call{body: oneValid, gzip: true})
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	last, _ := s.LastRequest()
	require.Equal(t, oneValid, string(last.Body))
	require.NotEqual(t, last.Body, last.RawBody)
	require.Equal(t, "gzip", last.Header.Get("Content-Encoding"))
	require.Equal(t, 1.0, s.Total("m"))
}

func measurementsBody(n int) string {
	ms := make([]string, n)
	for i := range ms {
		ms[i] = fmt.Sprintf(`{"name":"m","value":%d}`, i)
	}
	return `{"tags":{"a":"b"},"measurements":[` + strings.Join(ms, ",") + `]}`
}

func TestMaxMeasurementsPerRequest(t *testing.T) {
	tests := []struct {
		name       string
		opts       []Option
		n          int
		wantStatus int
	}{
		{"default limit", nil, librato.MaxMeasurementsPerRequest, 202},
		{"default limit exceeded", nil, librato.MaxMeasurementsPerRequest + 1, 400},
		{"configured limit", []Option{WithMaxMeasurements(3)}, 3, 202},
		{"configured limit exceeded", []Option{WithMaxMeasurements(3)}, 4, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.opts...)
			resp, body := do(t, s, call{body: measurementsBody(tt.n)})
			require.Equal(t, tt.wantStatus, resp.StatusCode, string(body))
			if tt.wantStatus == 400 {
				var e librato.ErrorResponse
				require.NoError(t, json.Unmarshal(body, &e))
				require.Len(t, e.Errors.Params["measurements"], 1)
				require.Empty(t, s.Measurements())
			} else {
				require.Len(t, s.Measurements(), tt.n)
			}
		})
	}
}

func TestMaxBodyBytes(t *testing.T) {
	s := newServer(t, WithMaxBodyBytes(int64(len(oneValid))))
	resp, _ := do(t, s, call{body: oneValid})
	require.Equal(t, http.StatusAccepted, resp.StatusCode)

	resp, body := do(t, s, call{body: oneValid + " "})
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, string(body))

	// Small on the wire, too large once decompressed.
	big := `{"tags":{"a":"b"},"measurements":[{"name":"m","value":1}]}` + strings.Repeat(" ", 1000)
	resp, body = do(t, s, call{body: big, gzip: true})
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, string(body))
	last, _ := s.LastRequest()
	require.Less(t, len(last.RawBody), len(oneValid))
	require.Len(t, s.Measurements(), 1)
}

func TestMalformedBody(t *testing.T) {
	for _, status := range []int{0, http.StatusTooManyRequests} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			var opts []Option
			want := http.StatusBadRequest
			if status != 0 {
				opts = append(opts, WithMalformedStatus(status))
				want = status
			}
			s := newServer(t, opts...)
			for _, body := range []string{`{`, `[]`, `{"measurements":{}}`, `{"tags":{"a":1},"measurements":[]}`, oneValid + `x`,
				`{"tags":{"a":"b"},"measurements":[{"name":"m","value":NaN}]}`, // JSON has no NaN or Inf
				`{"tags":{"a":"b"},"measurements":[{"name":"m","value":"1"x}]}`} {
				resp, got := do(t, s, call{body: body})
				require.Equal(t, want, resp.StatusCode, body)
				var e librato.ErrorResponse
				require.NoError(t, json.Unmarshal(got, &e))
				require.Len(t, e.Errors.Request, 1)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	s := newServer(t)
	resp, body := do(t, s, call{path: "/v1/metrics/m", body: oneValid})
	require.Equal(t, http.StatusNotFound, resp.StatusCode, string(body))
	resp, _ = do(t, s, call{method: http.MethodGet})
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "POST", resp.Header.Get("Allow"))
	resp, _ = do(t, s, call{method: http.MethodPut, path: librato.LegacyMetricsPath})
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

func TestTimeWindow(t *testing.T) {
	now := time.Unix(1600000000, 0)
	s := newServer(t, WithTimeWindow(time.Hour, time.Minute), WithClock(func() time.Time { return now }))
	resp, body := do(t, s, call{body: `{"tags":{"a":"b"},"measurements":[{"name":"m","value":1}]}`})
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "an absent time is not checked: %s", body)

	tests := []struct {
		time int64
		want int
	}{
		{0, 400},
		{now.Unix(), 202},
		{now.Unix() - 3600, 202},
		{now.Unix() - 3601, 400},
		{now.Unix() + 60, 202},
		{now.Unix() + 61, 400},
		{now.UnixMilli(), 400}, // milliseconds by mistake
	}
	for _, tt := range tests {
		body := fmt.Sprintf(`{"tags":{"a":"b"},"measurements":[{"name":"m","value":1,"time":%d}]}`, tt.time)
		resp, got := do(t, s, call{body: body})
		require.Equal(t, tt.want, resp.StatusCode, "time %d: %s", tt.time, got)
		if tt.time == now.Unix()-3601 {
			require.Contains(t, string(got), "is too far in the past")
		}
	}
}
