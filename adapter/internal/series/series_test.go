package series_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/series"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
)

type sum struct{ v float64 }

func counter(name string, labels ...string) *sinks.Metric {
	return &sinks.Metric{Namespace: "istio", Name: name, Kind: sinks.Counter, LabelNames: labels, Description: name}
}

func batch(t0 time.Time, b sinks.Binding, values ...any) *sinks.Batch {
	out := &sinks.Batch{Time: t0}
	for i := 0; i < len(values); i += 2 {
		labels := [][]byte{}
		for _, l := range values[i].([]string) {
			labels = append(labels, []byte(l))
		}
		out.Add(b, values[i+1].(float64), labels)
	}
	return out
}

func add(f *series.Family[*sum], s *series.Series[*sum], v float64) { s.State.v += v }

func newRegistry(maxSeries int, removed *[]string) *series.Registry[*sum] {
	return series.New(series.Options[*sum]{
		MaxSeries: maxSeries,
		NewState:  func(*series.Family[*sum]) *sum { return &sum{} },
		OnRemove: func(f *series.Family[*sum], s *series.Series[*sum], why series.RemoveReason) {
			if removed != nil {
				*removed = append(*removed, f.Name+"/"+s.Key+"/"+why.String())
			}
		},
	})
}

func values(r *series.Registry[*sum]) map[string]float64 {
	out := map[string]float64{}
	r.Each(func(f *series.Family[*sum], s *series.Series[*sum]) {
		key := f.Name
		for _, l := range s.Labels {
			key += "|" + l
		}
		out[key] = s.State.v
	})
	return out
}

func TestApplyAggregatesBySeries(t *testing.T) {
	r := newRegistry(0, nil)
	f := r.Bind("requests", counter("requests", "code", "path"), 1)
	d := r.Apply(batch(time.Unix(100, 0), f,
		[]string{"200", "/a"}, 1.0,
		[]string{"200", "/a"}, 2.0,
		[]string{"500", "/a"}, 5.0,
		[]string{"", "/a|b"}, 1.0,
	), add)
	require.Zero(t, d.Total())
	require.Equal(t, map[string]float64{"requests|200|/a": 3, "requests|500|/a": 5, "requests||/a|b": 1}, values(r))
	require.Equal(t, 3, r.Len())
}

func TestCaps(t *testing.T) {
	r := newRegistry(3, nil)
	m := counter("a", "x")
	m.MaxSeries = 2
	fa := r.Bind("a", m, 1)
	fb := r.Bind("b", counter("b", "x"), 1)
	d := r.Apply(batch(time.Unix(1, 0), fa, []string{"1"}, 1.0, []string{"2"}, 1.0, []string{"3"}, 1.0, []string{"1"}, 1.0), add)
	require.Equal(t, series.Drops{FamilyLimit: 1, Limited: []series.Limited{{Metric: "a", Limit: 2}}}, d,
		"the third series of a exceeds its cap; existing series still count")
	d = r.Apply(batch(time.Unix(1, 0), fb, []string{"1"}, 1.0, []string{"2"}, 1.0), add)
	require.Equal(t, series.Drops{SinkLimit: 1, Limited: []series.Limited{{Metric: "b", SinkLimit: true, Limit: 3}}}, d)
	require.Equal(t, map[string]float64{"a|1": 2, "a|2": 1, "b|1": 1}, values(r))

	// The caps are named once per metric, not per dropped sample.
	d = r.Apply(batch(time.Unix(2, 0), fa, []string{"4"}, 1.0, []string{"5"}, 1.0), add)
	require.Equal(t, series.Drops{FamilyLimit: 2}, d)
	d = r.Apply(batch(time.Unix(2, 0), fb, []string{"3"}, 1.0), add)
	require.Equal(t, series.Drops{SinkLimit: 1}, d)
}

// TestCapsAreNamedAgainAfterSeriesExpire: once a metric lost series to
// expiry, its next drop at a cap is news and named again.
func TestCapsAreNamedAgainAfterSeriesExpire(t *testing.T) {
	r := newRegistry(0, nil)
	m := counter("a", "x")
	m.MaxSeries, m.Expiry = 1, 10*time.Second
	fa := r.Bind("a", m, 1)
	d := r.Apply(batch(time.Unix(0, 0), fa, []string{"1"}, 1.0, []string{"2"}, 1.0), add)
	require.Equal(t, []series.Limited{{Metric: "a", Limit: 1}}, d.Limited)
	d = r.Apply(batch(time.Unix(1, 0), fa, []string{"2"}, 1.0), add)
	require.Empty(t, d.Limited)
	require.Equal(t, 1, r.Expire(time.Unix(20, 0)))
	d = r.Apply(batch(time.Unix(21, 0), fa, []string{"3"}, 1.0, []string{"4"}, 1.0), add)
	require.Equal(t, series.Drops{FamilyLimit: 1, Limited: []series.Limited{{Metric: "a", Limit: 1}}}, d)
}

func TestSameDefinitionSharesSeriesAcrossConfigs(t *testing.T) {
	r := newRegistry(0, nil)
	old := r.Bind("requests", counter("requests", "code"), 1)
	r.Apply(batch(time.Unix(1, 0), old, []string{"200"}, 1.0), add)

	// A new handler config with the same definition (only a limit changed).
	m := counter("requests", "code")
	m.MaxSeries = 10
	newer := r.Bind("requests", m, 1)
	require.Same(t, old, newer)
	r.Unbind(old)
	r.Apply(batch(time.Unix(2, 0), newer, []string{"200"}, 1.0), add)
	require.Equal(t, map[string]float64{"requests|200": 2}, values(r), "series survive the config change")

	r.Unbind(newer)
	require.Equal(t, map[string]float64{"requests|200": 2}, values(r), "the series are the sink's: the last unbind keeps them")
	again := r.Bind("requests", counter("requests", "code"), 1)
	require.Same(t, old, again, "a config binding the definition again finds its series")
	r.Apply(batch(time.Unix(3, 0), again, []string{"200"}, 1.0), add)
	require.Equal(t, map[string]float64{"requests|200": 3}, values(r))
}

// TestUnboundSeriesExpireByTheirOwnRules: a family no handler config binds
// keeps its series until their metric's expiry removes them; then the
// family goes too. Without an expiry they stay. An unbound family with no
// series is removed at once.
func TestUnboundSeriesExpireByTheirOwnRules(t *testing.T) {
	var removed []string
	r := newRegistry(0, &removed)
	m := counter("expiring", "code")
	m.Expiry = 10 * time.Second
	exp := r.Bind("expiring", m, 1)
	kept := r.Bind("kept", counter("kept"), 1)
	empty := r.Bind("empty", counter("empty"), 1)
	r.Apply(batch(time.Unix(100, 0), exp, []string{"200"}, 1.0), add)
	r.Apply(batch(time.Unix(100, 0), kept, []string{}, 5.0), add)
	r.Unbind(exp)
	r.Unbind(kept)
	r.Unbind(empty)
	require.False(t, r.Contains(empty), "nothing to keep")
	require.True(t, r.Contains(exp))
	require.False(t, r.Bound(exp))
	require.Equal(t, map[string]float64{"expiring|200": 1, "kept": 5}, values(r))

	require.Equal(t, 1, r.Expire(time.Unix(120, 0)))
	require.Equal(t, []string{"expiring/" + sinks.EncodeKey("200") + "/expired"}, removed)
	r.Expire(time.Unix(121, 0))
	require.False(t, r.Contains(exp), "unbound and empty: removed")
	require.True(t, r.Contains(kept), "no expiry: kept while the sink lives")
	require.Equal(t, map[string]float64{"kept": 5}, values(r))

	require.False(t, r.Supersede(r.Bind("other", counter("other"), 1)), "a bound family is not superseded")
	require.True(t, r.Supersede(kept))
	require.True(t, kept.Superseded())
	require.Zero(t, r.Len())
}

func TestChangedDefinitionSupersedesOlderConfig(t *testing.T) {
	var removed []string
	r := newRegistry(0, &removed)
	old := r.Bind("requests", counter("requests", "code"), 1)
	other := r.Bind("other", counter("other"), 1)
	r.Apply(batch(time.Unix(1, 0), old, []string{"200"}, 1.0), add)
	r.Apply(batch(time.Unix(1, 0), other, []string{}, 7.0), add)

	newer := r.Bind("requests", counter("requests", "code", "path"), 1)
	require.NotSame(t, old, newer)
	require.True(t, old.Superseded())
	require.False(t, newer.Superseded())
	require.Equal(t, []string{"requests/" + sinks.EncodeKey("200") + "/superseded"}, removed)

	d := r.Apply(batch(time.Unix(2, 0), old, []string{"200"}, 1.0), add)
	require.Equal(t, series.Drops{Superseded: 1}, d, "the older config's samples never mix in")
	r.Apply(batch(time.Unix(2, 0), newer, []string{"200", "/x"}, 4.0), add)
	require.Equal(t, map[string]float64{"requests|200|/x": 4, "other": 7}, values(r), "other metrics are untouched")

	r.Unbind(old)
	require.Equal(t, 2, r.Len(), "unbinding the superseded family leaves the new one")
}

func TestExpire(t *testing.T) {
	var removed []string
	r := newRegistry(0, &removed)
	m := counter("requests", "code")
	m.Expiry = 10 * time.Second
	f := r.Bind("requests", m, 1)
	r.Apply(batch(time.Unix(100, 0), f, []string{"old"}, 1.0), add)
	r.Apply(batch(time.Unix(108, 0), f, []string{"fresh"}, 1.0), add)

	require.Equal(t, 0, r.Expire(time.Unix(109, 0)))
	require.Equal(t, 0, r.Expire(time.Unix(111, 0)), "checked again only after expiry/2")
	require.Equal(t, 1, r.Expire(time.Unix(115, 0)))
	require.Equal(t, map[string]float64{"requests|fresh": 1}, values(r))
	require.Equal(t, []string{"requests/" + sinks.EncodeKey("old") + "/expired"}, removed)
}

func TestDecodeKeyRoundTrip(t *testing.T) {
	long := string(make([]byte, 300))
	for _, labels := range [][]string{{}, {""}, {"a", "", "c"}, {long, "x"}} {
		got := sinks.DecodeKey(sinks.EncodeKey(labels...))
		if len(labels) == 0 {
			require.Empty(t, got)
			continue
		}
		require.Equal(t, labels, got)
	}
}

func TestEachInVisitsOnlyThatFamily(t *testing.T) {
	r := newRegistry(0, nil)
	a := r.Bind("a", counter("a", "l"), 1)
	b := r.Bind("b", counter("b", "l"), 1)
	r.Apply(batch(time.Unix(100, 0), a, []string{"x"}, 1.0, []string{"y"}, 2.0), add)
	r.Apply(batch(time.Unix(100, 0), b, []string{"z"}, 3.0), add)
	got := map[string]float64{}
	r.EachIn(a, func(s *series.Series[*sum]) { got[s.Labels[0]] = s.State.v })
	require.Equal(t, map[string]float64{"x": 1, "y": 2}, got)

	// A superseded family has nothing left to visit.
	r.Bind("a", counter("a", "other"), 1)
	visited := 0
	r.EachIn(a, func(*series.Series[*sum]) { visited++ })
	require.Zero(t, visited)
}
