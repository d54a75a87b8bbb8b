package series_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshmetrics/meshmetrics/adapter/internal/series"
	"github.com/meshmetrics/meshmetrics/adapter/internal/sinks"
)

type info struct{ name string }

func TestCatalogSharesClashesAndSupersedes(t *testing.T) {
	reg := series.New(series.Options[int]{})
	cat := series.NewCatalog[int, *info](reg)
	lat := &sinks.Metric{Name: "lat", Kind: sinks.Distribution, Buckets: []float64{1}}
	built := 0
	newInfo := func(name string) func(*series.Family[int]) *info {
		return func(f *series.Family[int]) *info {
			built++
			require.Equal(t, name, f.Name, "given the new family")
			return &info{name: name}
		}
	}
	a, err := cat.Bind("lat", []string{"lat_bucket", "lat_sum", "lat_count"}, lat, 1, newInfo("lat"))
	require.NoError(t, err)
	b, err := cat.Bind("lat", []string{"lat_bucket", "lat_sum", "lat_count"}, lat, 1, newInfo("lat"))
	require.NoError(t, err)
	require.Same(t, a, b, "an identical definition shares the family")
	require.Equal(t, 1, built)

	_, err = cat.Bind("lat_count", []string{"lat_count"}, &sinks.Metric{Name: "lat_count", Kind: sinks.Counter}, 1, newInfo("lat_count"))
	var clash *series.ClashError
	require.True(t, errors.As(err, &clash))
	require.Equal(t, series.ClashError{Metric: "lat_count", Series: "lat_count", Other: "lat"}, *clash)
	require.EqualError(t, err, "metric lat_count would write series lat_count, which metric lat already writes")

	changed := &sinks.Metric{Name: "lat", Kind: sinks.Distribution, Buckets: []float64{1, 2}}
	c, err := cat.Bind("lat", []string{"lat_bucket", "lat_sum", "lat_count"}, changed, 1, newInfo("lat"))
	require.NoError(t, err)
	require.True(t, a.Superseded(), "a changed definition supersedes the older one")
	_, ok := cat.Info(a)
	require.False(t, ok)
	got, ok := cat.Info(c)
	require.True(t, ok)
	require.Equal(t, "lat", got.name)
	require.Len(t, cat.Infos(), 1)

	cat.Unbind(c)
	_, ok = cat.Info(c)
	require.False(t, ok, "the last binding of a definition without series removes it")
	require.Empty(t, cat.Infos())
	_, err = cat.Bind("lat_count", []string{"lat_count"}, &sinks.Metric{Name: "lat_count", Kind: sinks.Counter}, 1, newInfo("lat_count"))
	require.NoError(t, err, "no clash once the other definition is gone")
}

// TestUnboundDefinitionsKeepTheirSeriesUntilSomethingNeedsTheirNames: a
// definition no handler binds stays, with its series, for its sink to keep
// exposing; bound again, it is the same; a definition that would write one
// of its names supersedes it rather than being refused.
func TestUnboundDefinitionsKeepTheirSeriesUntilSomethingNeedsTheirNames(t *testing.T) {
	reg := series.New(series.Options[*sum]{NewState: func(*series.Family[*sum]) *sum { return &sum{} }})
	cat := series.NewCatalog[*sum, *info](reg)
	newInfo := func(name string) func(*series.Family[*sum]) *info {
		return func(*series.Family[*sum]) *info { return &info{name: name} }
	}
	m := &sinks.Metric{Name: "lat", Kind: sinks.Distribution, Buckets: []float64{1}}
	a, err := cat.Bind("lat", []string{"lat_bucket", "lat_sum", "lat_count"}, m, 1, newInfo("lat"))
	require.NoError(t, err)
	reg.Apply(batch(time.Unix(1, 0), a, []string{}, 1.0), add)
	cat.Unbind(a)
	got, ok := cat.Info(a)
	require.True(t, ok, "its series are still there")
	require.Equal(t, "lat", got.name)
	require.Len(t, cat.Infos(), 1)

	again, err := cat.Bind("lat", []string{"lat_bucket", "lat_sum", "lat_count"}, m, 1, newInfo("lat"))
	require.NoError(t, err)
	require.Same(t, a, again)
	cat.Unbind(again)

	c, err := cat.Bind("lat_count", []string{"lat_count"}, &sinks.Metric{Name: "lat_count", Kind: sinks.Counter}, 1, newInfo("lat_count"))
	require.NoError(t, err, "an unbound definition in the way is superseded")
	require.True(t, a.Superseded())
	require.Zero(t, reg.Len())
	_, ok = cat.Info(a)
	require.False(t, ok)
	require.Len(t, cat.Infos(), 1)
	_, ok = cat.Info(c)
	require.True(t, ok)
}
