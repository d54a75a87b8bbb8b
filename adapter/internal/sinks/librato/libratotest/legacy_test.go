package libratotest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks/librato"
)

const docLegacyExample = `{ "measure_time": 1600000020, "source": "meshmetrics-0",
  "gauges":   [ {"name":"istio.request.size","count":3,"sum":1650,"min":120,"max":1024,"sum_squares":1319012},
                {"name":"istio.active_series","value":42,"source":"meshmetrics-1","measure_time":1599999960} ],
  "counters": [ {"name":"istio.requests","value":1234} ] }`

func legacyCall(body string) call {
	return call{path: librato.LegacyMetricsPath, body: body}
}

func TestLegacyDocsExampleIsRecorded(t *testing.T) {
	s := newServer(t)
	resp, body := do(t, s, legacyCall(docLegacyExample))
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	seq := s.Requests()[0].Seq
	require.Equal(t, []LegacyPoint{
		{Kind: Gauge, Name: "istio.request.size", Source: "meshmetrics-0", MeasureTime: 1600000020,
			Count: new(int64(3)), Sum: new(1650.0), Min: new(120.0), Max: new(1024.0), SumSquares: new(1319012.0), Request: seq},
		{Kind: Gauge, Name: "istio.active_series", Source: "meshmetrics-1", MeasureTime: 1599999960, Value: new(42.0), Request: seq},
		{Kind: Counter, Name: "istio.requests", Source: "meshmetrics-0", MeasureTime: 1600000020, Value: new(1234.0), Request: seq},
	}, s.LegacyPoints())
	require.Equal(t, 1650.0, s.LegacyGaugeTotal("istio.request.size"))
	require.Equal(t, 42.0, s.LegacyGaugeTotal("ISTIO.active_series"))
	last, ok := s.LegacyCounterLast("istio.requests", "meshmetrics-0")
	require.True(t, ok)
	require.Equal(t, 1234.0, last)
	_, ok = s.LegacyCounterLast("istio.requests", "meshmetrics-1")
	require.False(t, ok)
	require.Empty(t, s.Measurements(), "legacy points are kept apart from tagged ones")
	require.Equal(t, 3, s.Stats().LegacyAccepted)
}

func TestLegacyEncodings(t *testing.T) {
	now := time.Unix(1600000000, 0)
	form := url.Values{
		"source":                    {"web-1"},
		"gauges[0][name]":           {"cpu"},
		"gauges[0][value]":          {"88.5"},
		"gauges[1][name]":           {"latency"},
		"gauges[1][count]":          {"2"},
		"gauges[1][sum]":            {"30"},
		"gauges[1][source]":         {"web-2"},
		"gauges[10][name]":          {"ordered.numerically"},
		"gauges[10][value]":         {"1"},
		"counters[0][name]":         {"conns"},
		"counters[0][value]":        {"5"},
		"counters[0][measure_time]": {"1599999999"},
	}.Encode()
	tests := []struct {
		name        string
		c           call
		wantStatus  int
		wantGauges  []string
		wantCounter string
	}{
		{
			name:       "json array",
			c:          call{body: `{"gauges":[{"name":"a","value":1},{"name":"b","value":2}]}`},
			wantStatus: 200, wantGauges: []string{"a", "b"},
		},
		{
			name:       "json object keyed by name",
			c:          call{body: `{"gauges":{"b":{"value":2},"a":{"value":1}},"counters":{"c":{"value":3}}}`},
			wantStatus: 200, wantGauges: []string{"a", "b"}, wantCounter: "c",
		},
		{
			name:       "form",
			c:          call{body: form, contentType: "application/x-www-form-urlencoded"},
			wantStatus: 200, wantGauges: []string{"cpu", "latency", "ordered.numerically"}, wantCounter: "conns",
		},
		{
			name:       "form without content type",
			c:          call{body: "gauges[0][name]=a&gauges[0][value]=1", contentType: "-"},
			wantStatus: 200, wantGauges: []string{"a"},
		},
		{
			name:       "gzip json",
			c:          call{body: `{"counters":[{"name":"c","value":0}]}`, gzip: true},
			wantStatus: 200, wantCounter: "c",
		},
		{name: "text", c: call{body: "x", contentType: "text/plain"}, wantStatus: 415},
		{name: "broken json", c: call{body: `{"gauges":`}, wantStatus: 400},
		{name: "gauges neither list nor object", c: call{body: `{"gauges":3}`}, wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, WithClock(func() time.Time { return now }))
			tt.c.path = librato.LegacyMetricsPath
			resp, body := do(t, s, tt.c)
			require.Equal(t, tt.wantStatus, resp.StatusCode, string(body))
			var gauges []string
			counter := ""
			for _, p := range s.LegacyPoints() {
				if p.Kind == Gauge {
					gauges = append(gauges, p.Name)
				} else {
					counter = p.Name
				}
			}
			require.Equal(t, tt.wantGauges, gauges)
			require.Equal(t, tt.wantCounter, counter)
		})
	}

	s := newServer(t, WithClock(func() time.Time { return now }))
	resp, body := do(t, s, call{path: librato.LegacyMetricsPath, body: form, contentType: "application/x-www-form-urlencoded"})
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	points := s.LegacyPoints()
	require.Equal(t, "web-1", points[0].Source)
	require.Equal(t, now.Unix(), points[0].MeasureTime, "measure_time defaults to the receive time")
	require.Equal(t, 88.5, *points[0].Value)
	require.Equal(t, "web-2", points[1].Source)
	require.Equal(t, int64(2), *points[1].Count)
	require.Equal(t, 30.0, *points[1].Sum)
	require.Equal(t, int64(1599999999), points[3].MeasureTime)
}

func TestLegacyRules(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		wantParam string // "" means accepted
	}{
		{"gauge value", `{"gauges":[{"name":"g","value":1}]}`, ""},
		{"gauge summary", `{"gauges":[{"name":"g","count":2,"sum":3,"min":1,"max":2,"sum_squares":5}]}`, ""},
		{"counter", `{"counters":[{"name":"c","value":10}]}`, ""},
		{"nothing", `{"source":"s"}`, "measurements"},
		{"empty lists", `{"gauges":[],"counters":[]}`, "measurements"},
		{"name absent", `{"gauges":[{"value":1}]}`, "gauges[0].name"},
		{"name invalid", `{"counters":[{"name":"c d","value":1}]}`, "counters[0].name"},
		{"gauge count without sum", `{"gauges":[{"name":"g","count":2}]}`, "gauges[0].sum"},
		{"gauge count with value", `{"gauges":[{"name":"g","count":2,"sum":3,"value":1}]}`, "gauges[0].value"},
		{"gauge without value or count", `{"gauges":[{"name":"g"}]}`, "gauges[0].value"},
		{"gauge summary fields without count", `{"gauges":[{"name":"g","value":1,"sum":3}]}`, "gauges[0].count"},
		{"gauge has no last", `{"gauges":[{"name":"g","value":1,"last":3}]}`, ""}, // unknown fields are ignored
		{"counter without value", `{"counters":[{"name":"c"}]}`, "counters[0].value"},
		{"counter with summary", `{"counters":[{"name":"c","count":1,"sum":1}]}`, "counters[0]"},
		{"value out of range", `{"gauges":[{"name":"g","value":1e127}]}`, "gauges[0].value"},
		{"source valid", `{"source":"Web-1.a:b_c","gauges":[{"name":"g","value":1}]}`, ""},
		{"source reserved", `{"source":"all","gauges":[{"name":"g","value":1}]}`, "source"},
		{"source reserved in any case", `{"gauges":[{"name":"g","value":1,"source":"ALL"}]}`, "gauges[0].source"},
		{"source invalid", `{"source":"web 1","gauges":[{"name":"g","value":1}]}`, "source"},
		{"source too long", `{"source":"` + strings.Repeat("s", 256) + `","gauges":[{"name":"g","value":1}]}`, "source"},
		{"source empty", `{"counters":[{"name":"c","value":1,"source":""}]}`, "counters[0].source"},
		{"measure_time not an integer", `{"measure_time":1.5,"gauges":[{"name":"g","value":1}]}`, "measure_time"},
	}
	s := newServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.LegacyPoints())
			resp, body := do(t, s, legacyCall(tt.body))
			if tt.wantParam == "" {
				require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
				require.Greater(t, len(s.LegacyPoints()), before)
				return
			}
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, string(body))
			var e librato.ErrorResponse
			require.NoError(t, json.Unmarshal(body, &e), string(body))
			require.Contains(t, e.Errors.Params, tt.wantParam, string(body))
			require.Len(t, s.LegacyPoints(), before, "a rejected request must record nothing")
		})
	}

	resp, body := do(t, s, call{path: librato.LegacyMetricsPath, contentType: "application/x-www-form-urlencoded",
		body: "gauges[0][name]=g&gauges[0][value]=lots"})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, string(body), "is not a number")
}

func TestLegacyMaxMeasurements(t *testing.T) {
	body := func(gauges, counters int) string {
		var g, c []string
		for i := range gauges {
			g = append(g, fmt.Sprintf(`{"name":"g%d","value":1}`, i))
		}
		for i := range counters {
			c = append(c, fmt.Sprintf(`{"name":"c%d","value":1}`, i))
		}
		return `{"gauges":[` + strings.Join(g, ",") + `],"counters":[` + strings.Join(c, ",") + `]}`
	}
	tests := []struct {
		name             string
		opts             []Option
		gauges, counters int
		wantStatus       int
	}{
		{"default limit", nil, 200, 100, 200},
		{"default limit exceeded", nil, 200, 101, 400},
		{"configured limit", []Option{WithMaxLegacyMeasurements(2)}, 1, 1, 200},
		{"configured limit exceeded", []Option{WithMaxLegacyMeasurements(2)}, 2, 1, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.opts...)
			resp, got := do(t, s, legacyCall(body(tt.gauges, tt.counters)))
			require.Equal(t, tt.wantStatus, resp.StatusCode, string(got))
			if tt.wantStatus == 200 {
				require.Len(t, s.LegacyPoints(), tt.gauges+tt.counters)
			} else {
				require.Contains(t, string(got), "more than the limit")
				require.Empty(t, s.LegacyPoints())
			}
		})
	}
}

func TestLegacyCounterLastFollowsMeasureTime(t *testing.T) {
	s := newServer(t)
	for _, b := range []string{
		`{"source":"a","counters":[{"name":"c","value":10,"measure_time":1600000060}]}`,
		`{"source":"a","counters":[{"name":"c","value":5,"measure_time":1600000000}]}`, // late arrival
		`{"source":"b","counters":[{"name":"c","value":99,"measure_time":1600000120}]}`,
	} {
		resp, body := do(t, s, legacyCall(b))
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	}
	last, ok := s.LegacyCounterLast("c", "A")
	require.True(t, ok)
	require.Equal(t, 10.0, last)
}
