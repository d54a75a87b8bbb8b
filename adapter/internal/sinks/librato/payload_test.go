package librato

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// The request examples of backends.md §2 and §3, verbatim: the types must
// produce exactly these documents.
const (
	docMeasurementsExample = `{ "tags": {"cluster":"prod","reporter":"destination"}, "time": 1600000020, "period": 60,
  "measurements": [
    {"name":"istio.requests","value":17},
    {"name":"istio.request.size","time":1600000020,"period":60,"attributes":{"aggregate":false},
     "count":3,"sum":1650,"min":120,"max":1024,"last":506,"stddev":370.37,
     "tags":{"cluster":"prod","reporter":"source"}} ] }`
	docLegacyExample = `{ "measure_time": 1600000020, "source": "meshmetrics-0",
  "gauges":   [ {"name":"istio.request.size","count":3,"sum":1650,"min":120,"max":1024,"sum_squares":1319012},
                {"name":"istio.active_series","value":42,"source":"meshmetrics-1","measure_time":1599999960} ],
  "counters": [ {"name":"istio.requests","value":1234} ] }`
)

func TestMeasurementsRequestEncodesLikeTheDocs(t *testing.T) {
	req := MeasurementsRequest{
		Tags:   map[string]string{"cluster": "prod", "reporter": "destination"},
		Time:   1600000020,
		Period: 60,
		Measurements: []Measurement{
			{Name: "istio.requests", Value: new(17.0)},
			{
				Name: "istio.request.size", Time: 1600000020, Period: 60,
				Attributes: &Attributes{Aggregate: false},
				Count:      new(int64(3)), Sum: new(1650.0), Min: new(120.0), Max: new(1024.0),
				Last: new(506.0), Stddev: new(370.37),
				Tags: map[string]string{"cluster": "prod", "reporter": "source"},
			},
		},
	}
	got, err := json.Marshal(req)
	require.NoError(t, err)
	require.JSONEq(t, docMeasurementsExample, string(got))

	var back MeasurementsRequest
	require.NoError(t, json.Unmarshal([]byte(docMeasurementsExample), &back))
	require.Equal(t, req, back)
}

func TestMeasurementKeepsZeroesDistinctFromAbsent(t *testing.T) {
	// A zero value or count is data and must be sent; nil means absent.
	got, err := json.Marshal(Measurement{Name: "m", Value: new(0.0)})
	require.NoError(t, err)
	require.JSONEq(t, `{"name":"m","value":0}`, string(got))

	got, err = json.Marshal(Measurement{Name: "m", Count: new(int64(0)), Sum: new(0.0)})
	require.NoError(t, err)
	require.JSONEq(t, `{"name":"m","count":0,"sum":0}`, string(got))

	got, err = json.Marshal(MeasurementsRequest{})
	require.NoError(t, err)
	require.JSONEq(t, `{"measurements":null}`, string(got))
}

func TestNonFiniteValuesFailToEncode(t *testing.T) {
	// The sink must drop them first (§4); encoding/json refuses rather than
	// sending invalid JSON.
	_, err := json.Marshal(Measurement{Name: "m", Value: new(math.NaN())})
	require.Error(t, err)
}

func TestLegacyRequestEncodesLikeTheDocs(t *testing.T) {
	req := LegacyRequest{
		MeasureTime: 1600000020,
		Source:      "meshmetrics-0",
		Gauges: []LegacyGauge{
			{Name: "istio.request.size", Count: new(int64(3)), Sum: new(1650.0), Min: new(120.0), Max: new(1024.0), SumSquares: new(1319012.0)},
			{Name: "istio.active_series", Value: new(42.0), Source: "meshmetrics-1", MeasureTime: 1599999960},
		},
		Counters: []LegacyCounter{{Name: "istio.requests", Value: 1234}},
	}
	got, err := json.Marshal(req)
	require.NoError(t, err)
	require.JSONEq(t, docLegacyExample, string(got))

	var back LegacyRequest
	require.NoError(t, json.Unmarshal([]byte(docLegacyExample), &back))
	require.Equal(t, req, back)

	// A counter at zero (a new run) must still carry its value.
	got, err = json.Marshal(LegacyCounter{Name: "c"})
	require.NoError(t, err)
	require.JSONEq(t, `{"name":"c","value":0}`, string(got))
}

func TestMeasurementsResponseCarriesFailedZero(t *testing.T) {
	// Clients such as micrometer look for the literal `"failed":0` (§6).
	got, err := json.Marshal(MeasurementsResponse{Measurements: MeasurementsResult{Summary: MeasurementsSummary{Total: 2, Accepted: 2}}})
	require.NoError(t, err)
	require.Contains(t, string(got), `"failed":0`)
	require.JSONEq(t, `{"measurements":{"summary":{"total":2,"accepted":2,"failed":0,"filtered":0}}}`, string(got))
}

func TestErrorResponseDecodes(t *testing.T) {
	tests := []struct {
		name string
		body string
		want ErrorResponse
		text string
	}{
		{
			name: "params, documented example",
			body: `{"errors":{"params":{"name":["is not present"],"start_time":["is not a number"]}}}`,
			want: ErrorResponse{Errors: ErrorDetails{Params: map[string]Messages{
				"name": {"is not present"}, "start_time": {"is not a number"},
			}}},
			text: "name: is not present; start_time: is not a number",
		},
		{
			name: "request as a single string",
			body: `{"errors":{"request":"Content type was not application/json"}}`,
			want: ErrorResponse{Errors: ErrorDetails{Request: Messages{"Content type was not application/json"}}},
			text: "request: Content type was not application/json",
		},
		{
			name: "request and system arrays",
			body: `{"errors":{"request":["a","b"],"system":["down"]}}`,
			want: ErrorResponse{Errors: ErrorDetails{Request: Messages{"a", "b"}, System: Messages{"down"}}},
			text: "request: a, b; system: down",
		},
		{
			name: "stale time with request_time",
			body: `{"errors":{"params":{"measure_time":["is too far in the past"]}},"request_time":1475920599}`,
			want: ErrorResponse{
				Errors:      ErrorDetails{Params: map[string]Messages{"measure_time": {"is too far in the past"}}},
				RequestTime: 1475920599,
			},
			text: "measure_time: is too far in the past",
		},
		{
			name: "null lists",
			body: `{"errors":{"request":null}}`,
			want: ErrorResponse{},
			text: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got ErrorResponse
			require.NoError(t, json.Unmarshal([]byte(tt.body), &got))
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.text, got.Errors.String())
		})
	}

	var bad ErrorResponse
	require.Error(t, json.Unmarshal([]byte(`{"errors":{"request":42}}`), &bad))
}

func TestIsRateLimitBody(t *testing.T) {
	tests := []struct {
		body string
		want bool
	}{
		{`{"request_time": 1467306906, "error": "You have hit the API limit for measurements [measure:raw_rate]. Contact: support"}`, true},
		{`{"error":"Please use secured connection through https!"}`, false},
		{`Please use secured connection through https!`, false},
		{`{"errors":{"request":["You have hit the API limit"]}}`, false},
		{``, false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, IsRateLimitBody([]byte(tt.body)), tt.body)
	}

	var r RateLimitResponse
	require.NoError(t, json.Unmarshal([]byte(tests[0].body), &r))
	require.Equal(t, int64(1467306906), r.RequestTime)
}

func TestParseRateLimit(t *testing.T) {
	tests := []struct {
		in      string
		want    RateLimit
		wantErr bool
	}{
		{in: "limit=600000,remaining=599998,reset=1531370400", want: RateLimit{600000, 599998, 1531370400}},
		{in: "reset=5, remaining=0 ,limit=10", want: RateLimit{10, 0, 5}},
		{in: "limit=10,remaining=3,reset=7,burst=2", want: RateLimit{10, 3, 7}},
		{in: "Limit=1,Remaining=1,Reset=1", want: RateLimit{1, 1, 1}},
		{in: "limit=10,remaining=3", wantErr: true},
		{in: "limit=x,remaining=3,reset=1", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseRateLimit(tt.in)
		if tt.wantErr {
			require.Error(t, err, tt.in)
			continue
		}
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, got, tt.in)
	}

	rl := RateLimit{Limit: 600000, Remaining: 599998, Reset: 1531370400}
	require.Equal(t, "limit=600000,remaining=599998,reset=1531370400", rl.String())
	back, err := ParseRateLimit(rl.String())
	require.NoError(t, err)
	require.Equal(t, rl, back)
}

func TestValidValue(t *testing.T) {
	tests := []struct {
		v    float64
		want bool
	}{
		{0, true},
		{-17.5, true},
		{MaxAbsValue, true},
		{-MaxAbsValue, true},
		{MinAbsValue / 10, true}, // truncated to 0 by the service, not rejected
		{math.Nextafter(MaxAbsValue, math.Inf(1)), false},
		{-1e127, false},
		{math.MaxFloat64, false},
		{math.NaN(), false},
		{math.Inf(1), false},
		{math.Inf(-1), false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, ValidValue(tt.v), "%g", tt.v)
	}
}
