package librato

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Wire formats of the Librato and AppOptics HTTP APIs, as documented in
// shared/docs/backends.md Part A. The JSON tags are the API's field names; a
// pointer field with omitempty is one the API allows to be absent, so that
// "absent" and "zero" stay distinguishable (a count of 0 is not "no count").

// API paths. AppOptics only serves MeasurementsPath (tags-only, §1).
const (
	MeasurementsPath  = "/v1/measurements"
	LegacyMetricsPath = "/v1/metrics"
)

// Request limits (§4). The per-request counts are the documented batch
// caps; the service's own hard limits are unconfirmed, so clients stay at or
// below them.
const (
	MaxMeasurementsPerRequest       = 1000
	MaxLegacyMeasurementsPerRequest = 300
)

// Float range (§4): the service rejects a value whose magnitude exceeds
// MaxAbsValue with 400 and truncates one below MinAbsValue to 0.0.
const (
	MaxAbsValue = 1e126
	MinAbsValue = 1e-130
)

// ValidValue reports whether v can be sent: JSON has no NaN or ±Inf, and the
// service rejects magnitudes above MaxAbsValue.
func ValidValue(v float64) bool {
	return !math.IsNaN(v) && math.Abs(v) <= MaxAbsValue
}

// MeasurementsRequest is the body of the tagged POST /v1/measurements (§3).
// Tags, Time and Period apply to every measurement that does not set its own;
// a measurement's Tags replace Tags entirely, they are never merged.
type MeasurementsRequest struct {
	Tags         map[string]string `json:"tags,omitempty"`
	Time         int64             `json:"time,omitempty"`   // Unix seconds
	Period       int64             `json:"period,omitempty"` // seconds
	Measurements []Measurement     `json:"measurements"`
}

// Measurement is one tagged measurement (§3). Either Value is set, or Count
// with Sum (and optionally Min, Max, Last, Stddev) and then Value must be nil.
type Measurement struct {
	Name       string            `json:"name"`
	Tags       map[string]string `json:"tags,omitempty"`
	Time       int64             `json:"time,omitempty"`   // Unix seconds
	Period     int64             `json:"period,omitempty"` // seconds
	Value      *float64          `json:"value,omitempty"`
	Count      *int64            `json:"count,omitempty"`
	Sum        *float64          `json:"sum,omitempty"`
	Min        *float64          `json:"min,omitempty"`
	Max        *float64          `json:"max,omitempty"`
	Last       *float64          `json:"last,omitempty"`
	Stddev     *float64          `json:"stddev,omitempty"` // population standard deviation
	Attributes *Attributes       `json:"attributes,omitempty"`
}

// Attributes are metric properties sent with a measurement. The service
// applies them only when it creates the metric (§3).
type Attributes struct {
	// Aggregate switches on service-side aggregation per period [LAD-MA].
	Aggregate bool `json:"aggregate"`
}

// LegacyRequest is the body of the source-based POST /v1/metrics (§2).
// Source and MeasureTime apply to measurements that omit them.
type LegacyRequest struct {
	MeasureTime int64           `json:"measure_time,omitempty"` // Unix seconds
	Source      string          `json:"source,omitempty"`
	Gauges      []LegacyGauge   `json:"gauges,omitempty"`
	Counters    []LegacyCounter `json:"counters,omitempty"`
}

// LegacyGauge is a point-in-time gauge, either a plain Value or a summary:
// Count requires Sum, and then Value must be nil. The legacy API has no
// "last" (§2).
type LegacyGauge struct {
	Name        string   `json:"name"`
	Value       *float64 `json:"value,omitempty"`
	Count       *int64   `json:"count,omitempty"`
	Sum         *float64 `json:"sum,omitempty"`
	Min         *float64 `json:"min,omitempty"`
	Max         *float64 `json:"max,omitempty"`
	SumSquares  *float64 `json:"sum_squares,omitempty"` // lets the service derive a standard deviation
	Source      string   `json:"source,omitempty"`
	MeasureTime int64    `json:"measure_time,omitempty"`
}

// LegacyCounter is a cumulative, monotonically increasing value per run; the
// service derives the deltas, and a reset to zero starts a new run (§2).
type LegacyCounter struct {
	Name        string  `json:"name"`
	Value       float64 `json:"value"`
	Source      string  `json:"source,omitempty"`
	MeasureTime int64   `json:"measure_time,omitempty"`
}

// MeasurementsResponse is the success body of POST /v1/measurements. Its
// exact shape is unconfirmed (§6); clients should rely only on a 2xx status
// and a zero Failed.
type MeasurementsResponse struct {
	Measurements MeasurementsResult `json:"measurements"`
}

// MeasurementsResult wraps the summary, as in MeasurementsResponse.
type MeasurementsResult struct {
	Summary MeasurementsSummary `json:"summary"`
}

// MeasurementsSummary counts the measurements of one request.
type MeasurementsSummary struct {
	Total    int `json:"total"`
	Accepted int `json:"accepted"`
	Failed   int `json:"failed"`
	Filtered int `json:"filtered"`
}

// ErrorResponse is the API's error body (§6), e.g.
// {"errors":{"params":{"name":["is not present"]}}}. RequestTime appears on
// some errors, such as a stale measure_time.
type ErrorResponse struct {
	Errors      ErrorDetails `json:"errors"`
	RequestTime int64        `json:"request_time,omitempty"`
}

// ErrorDetails groups error messages: Params by attribute, Request about the
// request as a whole, System about the service.
type ErrorDetails struct {
	Params  map[string]Messages `json:"params,omitempty"`
	Request Messages            `json:"request,omitempty"`
	System  Messages            `json:"system,omitempty"`
}

// String renders all messages on one line, params sorted by attribute, for
// logs.
func (d ErrorDetails) String() string {
	var parts []string
	keys := make([]string, 0, len(d.Params))
	for k := range d.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, k+": "+strings.Join(d.Params[k], ", "))
	}
	if len(d.Request) > 0 {
		parts = append(parts, "request: "+strings.Join(d.Request, ", "))
	}
	if len(d.System) > 0 {
		parts = append(parts, "system: "+strings.Join(d.System, ", "))
	}
	return strings.Join(parts, "; ")
}

// Messages is a list of error messages. The API sometimes sends a single
// string where it documents an array (§6), so both decode.
type Messages []string

// UnmarshalJSON accepts a JSON array of strings, a single string or null.
func (m *Messages) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*m = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*m = Messages{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("librato: error messages are neither a string nor a list of strings: %w", err)
	}
	*m = many
	return nil
}

// RateLimitResponse is the flat body of a rate-limited request (§6), e.g.
// {"request_time":1467306906,"error":"You have hit the API limit for measurements [measure:raw_rate]. ..."}.
type RateLimitResponse struct {
	RequestTime int64  `json:"request_time"`
	Error       string `json:"error"`
}

// RateLimitMessage starts the error text of a rate-limited request (§5); a
// 403 carrying it is a rate limit to back off from, any other 403 is final.
const RateLimitMessage = "You have hit the API limit"

// IsRateLimitBody reports whether an error body is the rate-limit body.
func IsRateLimitBody(body []byte) bool {
	var r RateLimitResponse
	return json.Unmarshal(body, &r) == nil && strings.HasPrefix(r.Error, RateLimitMessage)
}

// Rate-limit response headers (§5), valued like RateLimit.String.
const (
	HeaderRateLimitStd = "X-Librato-RateLimit-Std"
	HeaderRateLimitAgg = "X-Librato-RateLimit-Agg"
)

// RateLimit is the value of a rate-limit header.
type RateLimit struct {
	Limit     int64
	Remaining int64
	Reset     int64 // Unix seconds when Remaining is restored to Limit
}

// String formats r as the service does: "limit=600000,remaining=599998,reset=1531370400".
func (r RateLimit) String() string {
	return "limit=" + strconv.FormatInt(r.Limit, 10) +
		",remaining=" + strconv.FormatInt(r.Remaining, 10) +
		",reset=" + strconv.FormatInt(r.Reset, 10)
}

// ParseRateLimit parses a rate-limit header value: comma-separated key=value
// pairs in any order (§5). Unknown keys are ignored; limit, remaining and
// reset are all required.
func ParseRateLimit(v string) (RateLimit, error) {
	var r RateLimit
	var seen int
	for _, field := range strings.Split(v, ",") {
		key, val, ok := strings.Cut(strings.TrimSpace(field), "=")
		if !ok {
			continue
		}
		var dst *int64
		var bit int
		switch strings.ToLower(strings.TrimSpace(key)) {
		case "limit":
			dst, bit = &r.Limit, 1
		case "remaining":
			dst, bit = &r.Remaining, 2
		case "reset":
			dst, bit = &r.Reset, 4
		default:
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
		if err != nil {
			return RateLimit{}, fmt.Errorf("librato: rate-limit header %q: %s: %w", v, key, err)
		}
		*dst = n
		seen |= bit
	}
	if seen != 7 {
		return RateLimit{}, errors.New("librato: rate-limit header " + strconv.Quote(v) + " lacks limit, remaining or reset")
	}
	return r, nil
}
